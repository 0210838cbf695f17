# The appliance as a Nix package, built by uv2nix from the project's uv.lock: the same pinned wheels `./dev` installs,
# no second list of dependencies. The `cpu` extra (onnxruntime); `lpa` is the one program it puts in bin.
{
  lib,
  pkgs,
  uv2nix,
  pyproject-nix,
  pyproject-build-systems,
  # The repository: pyproject.toml, uv.lock and the sources.
  workspaceRoot,
  python ? pkgs.python313,
}:
let
  workspace = uv2nix.lib.workspace.loadWorkspace { inherit workspaceRoot; };

  # Wheels as uv.lock pins them (an sdist only where a package publishes no wheel).
  locked = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };

  # manylinux wheels load libstdc++, libgcc_s and zlib from the host's library path, which NixOS does not have:
  # give their extensions an RPATH into the store.
  nativeWheels = [
    "numpy"
    "onnxruntime"
    "pillow"
    "protobuf"
  ];
  patchWheels =
    _final: prev:
    lib.genAttrs (builtins.filter (name: prev ? ${name}) nativeWheels) (
      name:
      prev.${name}.overrideAttrs (old: {
        nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [ pkgs.autoPatchelfHook ];
        buildInputs = (old.buildInputs or [ ]) ++ [
          pkgs.stdenv.cc.cc.lib
          pkgs.zlib
        ];
      })
    );

  pythonSet = (pkgs.callPackage pyproject-nix.build.packages { inherit python; }).overrideScope (
    lib.composeManyExtensions [
      pyproject-build-systems.overlays.default
      locked
      patchWheels
    ]
  );

  venv = pythonSet.mkVirtualEnv "livepeer-appliance-env" { livepeer-appliance = [ "cpu" ]; };
  inherit (pythonSet.livepeer-appliance) version;
in
pkgs.runCommand "livepeer-appliance-${version}"
  {
    inherit version;
    passthru = { inherit venv pythonSet python; };
    meta = {
      description = "Turns a GPU machine into a Livepeer AI orchestrator node (the `lpa` command)";
      license = lib.licenses.mit;
      mainProgram = "lpa";
      platforms = lib.platforms.linux;
    };
  }
  ''
    mkdir -p "$out/bin"
    ln -s ${venv}/bin/lpa "$out/bin/lpa"
  ''
