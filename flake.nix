{
  description = "Livepeer AI orchestrator appliance: the lpa package, a NixOS module and a bootable example node";

  # flake.lock pins each input by rev and narHash. The revs are a set published together (nixpkgs nixos-unstable of
  # 2025-07-31 with pyproject.nix, uv2nix and build-system-pkgs of late July 2025); nix/README.md says where each
  # pin was read and cross-checked. `nix flake update` moves them all.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
      uv2nix,
      pyproject-build-systems,
    }:
    let
      inherit (nixpkgs) lib;
      # The appliance's wheels (onnxruntime, NVIDIA's libraries) are x86_64 Linux ones.
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};

      appliance = import ./nix/package.nix {
        inherit
          lib
          pkgs
          uv2nix
          pyproject-nix
          pyproject-build-systems
          ;
        workspaceRoot = ./.;
      };

      exampleNode = import ./nix/example-node.nix;
    in
    {
      packages.${system} = {
        inherit appliance;
        default = appliance;

        # The example node's model files, fetched and verified by Nix (for nodes with no network at boot).
        models = pkgs.callPackage ./nix/models.nix {
          catalog = ./models;
          names = map (entry: entry.model) exampleNode.models;
        };

        # A bootable disk image (qcow2, EFI) of the example node. Other formats:
        # nixos-rebuild build-image --flake .#example --image-variant raw-efi
        image = self.nixosConfigurations.example.config.system.build.images.qemu-efi;
      };

      # services.livepeer-appliance, with the package defaulting to this flake's.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.livepeer-appliance.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.appliance
                or (throw "livepeer-appliance: the flake builds for x86_64-linux only");
        };

      nixosConfigurations.example = lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./nix/example.nix
          ./nix/example-machine.nix
          { nixpkgs.hostPlatform = system; }
        ];
      };

      checks.${system} = {
        # The package builds, imports its native wheels and reads a node file.
        appliance = pkgs.runCommand "livepeer-appliance-smoke" { } ''
          ${lib.getExe appliance} --version
          ${appliance.venv}/bin/python -c 'import msgspec, numpy, onnxruntime, PIL; print(onnxruntime.get_available_providers())'
          HOME="$TMPDIR" ${lib.getExe appliance} node instances --node ${./node.example.toml}
          touch "$out"
        '';

        vm = import ./nix/vm-test.nix {
          inherit pkgs appliance;
          module = self.nixosModules.default;
        };
      };

      devShells.${system}.default = pkgs.mkShell {
        # uv and a Python with pip for ./dev (which installs the locked dev tools), nixfmt for nix/, and lpa.
        packages = [
          (appliance.python.withPackages (ps: [ ps.pip ]))
          pkgs.uv
          pkgs.nixfmt-rfc-style
          appliance
        ];
        env = {
          UV_PYTHON_DOWNLOADS = "never";
          UV_PYTHON = appliance.python.interpreter;
        };
      };

      formatter.${system} = pkgs.nixfmt-rfc-style;
    };
}
