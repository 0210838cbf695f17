# A folder of verified model files, fetched by Nix (fixed-output) instead of `lpa fetch-models` on the node: for nodes
# with no network at boot, the example image and the VM test. Point `settings.worker.model_dir` at it; the models
# unit then finds every file present with its manifest's sha256 and fetches nothing.
{
  lib,
  runCommand,
  fetchurl,
  unzip,
  # The catalog of manifests (the repository's models/).
  catalog,
  # The catalog names to include (a node's `models[].model`).
  names,
}:
let
  sources = import ./model-sources.nix { inherit catalog names; };
  install =
    source:
    let
      fetched = fetchurl source.fetch;
      target = ''"$out"/${lib.escapeShellArg source.file}'';
      member = lib.escapeShellArg source.member;
    in
    if source.member == null then
      "cp ${fetched} ${target}"
    else if lib.hasSuffix ".whl" source.fetch.url || lib.hasSuffix ".zip" source.fetch.url then
      "unzip -p ${fetched} ${member} > ${target}"
    else
      "tar -xzOf ${fetched} ${member} > ${target}";
  check = source: ''echo ${lib.escapeShellArg "${source.sha256}  ${source.file}"} >> "$NIX_BUILD_TOP/SHA256SUMS"'';
in
runCommand "livepeer-appliance-models"
  {
    nativeBuildInputs = [ unzip ];
    meta.description = "Model files of the Livepeer appliance's catalog: ${lib.concatStringsSep ", " names}";
  }
  ''
    mkdir -p "$out"
    ${lib.concatMapStringsSep "\n" install sources}
    ${lib.concatMapStringsSep "\n" check sources}
    # Each file must hash to its manifest's sha256, as `lpa` checks before loading it.
    (cd "$out" && sha256sum --check --strict "$NIX_BUILD_TOP/SHA256SUMS")
  ''
