# nix/module.nix's options, evaluated with ./lib-stub.nix, as a flat list the tests check:
#   [ { path = [ "services" "livepeer-appliance" "settings" "worker" "listen" ]; type; description; example; default; } ]
# `description` / `example` are whether the option has them; `default` is given where it is plain data (not taken
# from another option), `type` is the stub's description of it.
let
  lib = import ./lib-stub.nix;
  pkgs = {
    formats.toml = _: { type = lib.types.attrsOf (lib.types.str); };
    livepeer = {
      name = "livepeer";
    };
  };
  module = import ../module.nix {
    inherit lib pkgs;
    config.services.livepeer-appliance = { };
  };

  describe =
    t:
    {
      inherit (t) name;
    }
    // (if t ? values then { inherit (t) values; } else { })
    // (if t ? min then { inherit (t) min max; } else { })
    // (if t ? elem then { elem = describe t.elem; } else { })
    // (if t.name == "submodule" then { inherit (t) freeform; } else { });

  # The options a type holds inside it (a submodule, or a list of them).
  inner =
    t:
    if t.name == "submodule" then
      t.options
    else if t ? elem then
      inner t.elem
    else
      { };

  isPlain = v: builtins.isBool v || builtins.isInt v || builtins.isFloat v || builtins.isString v || v == null;
  plainDefault =
    option:
    if !(option ? default) then
      { }
    else if option ? defaultText then
      { defaultFrom = option.defaultText.text or option.defaultText; }
    else if isPlain option.default || builtins.isList option.default || builtins.isAttrs option.default then
      { inherit (option) default; }
    else
      { };

  walk =
    path: options:
    builtins.concatMap (
      name:
      let
        option = options.${name};
        here = path ++ [ name ];
      in
      if (option._type or null) == "option" then
        [
          (
            {
              path = here;
              type = describe option.type;
              description = (option.description or "") != "";
              example = option ? example;
            }
            // plainDefault option
          )
        ]
        ++ walk here (inner option.type)
      else
        walk here option
    ) (builtins.attrNames options);
in
walk [ ] module.options
