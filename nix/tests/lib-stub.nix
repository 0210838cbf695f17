# A stand-in for the nixpkgs `lib` functions nix/module.nix's option declarations use, so that tests/test_nix.py can
# evaluate them with nothing but `nix-instantiate` (nixpkgs cannot be fetched there). Options and types come out as
# plain data; nothing of the module system's merging is imitated, and the module's `config` is never evaluated.
let
  type = name: extra: { _type = "type"; inherit name; } // extra;
  wrap = name: elem: type name { inherit elem; };
in
rec {
  mkOption = attrs: { _type = "option"; } // attrs;
  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
  mkPackageOption =
    pkgs: name: args:
    mkOption (
      {
        type = types.package;
        default = pkgs.${name};
        description = "The ${name} package to use. ${args.extraDescription or ""}";
      }
      // (if args ? example then { example = literalExpression args.example; } else { })
    );
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  optional = condition: value: if condition then [ value ] else [ ];
  optionalAttrs = condition: attrs: if condition then attrs else { };
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  removePrefix =
    prefix: s:
    if hasPrefix prefix s then
      builtins.substring (builtins.stringLength prefix) (builtins.stringLength s) s
    else
      s;
  importTOML = path: builtins.fromTOML (builtins.readFile path);

  types = {
    str = type "str" { };
    bool = type "bool" { };
    port = type "port" { };
    package = type "package" { };
    path = type "path" { };
    enum = values: type "enum" { inherit values; };
    strMatching = pattern: type "strMatching" { inherit pattern; };
    nullOr = wrap "nullOr";
    listOf = wrap "listOf";
    nonEmptyListOf = wrap "nonEmptyListOf";
    attrsOf = wrap "attrsOf";
    ints.between = min: max: type "intsBetween" { inherit min max; };
    numbers.between = min: max: type "numbersBetween" { inherit min max; };
    submodule =
      module:
      type "submodule" {
        inherit (module) options;
        freeform = module ? freeformType;
      };
  };
}
