# The example node: node.example.toml's three models, served on the CPU, their files fetched by Nix so that the node
# needs no network at boot. The VM test boots this; `nixosConfigurations.example` (and the image) adds a machine.
{ lib, pkgs, ... }:
let
  node = import ./example-node.nix;
  models = pkgs.callPackage ./models.nix {
    catalog = ../models;
    names = map (entry: entry.model) node.models;
  };
in
{
  services.livepeer-appliance = {
    enable = true;
    settings = lib.recursiveUpdate node { worker.model_dir = "${models}"; };
  };

  system.stateVersion = "25.05";
}
