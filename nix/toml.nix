# A TOML writer in plain Nix (builtins only), for the node file.
#
# The module renders `services.livepeer-appliance.settings` with it (and checks the result with the appliance's own
# loader at build time), and tests/test_nix.py runs it offline: nixpkgs' `pkgs.formats.toml` needs a build, this
# needs nothing but `nix-instantiate --eval`.
#
#   render :: AttrSet -> String
#
# - attribute sets become `[tables]`, lists of attribute sets `[[arrays of tables]]`, at any depth; inside an array
#   (a value, not a table) they are inline tables `{ k = v }`;
# - `null` values are left out (TOML has no null; the appliance's optional fields default to unset);
# - keys are bare when they can be, quoted otherwise; strings are basic strings with every control character escaped;
# - floats are written as Nix prints them (six significant digits in Nix 2.8): keep exact numbers in strings, as the
#   node file's prices already are;
# - a path is written as a string of its store path (it is copied to the store, like any interpolated path): never
#   put a secret here, name its file instead.
let
  inherit (builtins)
    all
    attrNames
    concatStringsSep
    filter
    fromJSON
    genList
    isAttrs
    isList
    match
    replaceStrings
    toJSON
    typeOf
    ;

  hexDigit = n: builtins.substring n 1 "0123456789ABCDEF";
  hexByte = n: hexDigit (n / 16) + hexDigit (n - n / 16 * 16);

  # U+0001..U+001F and U+007F (a Nix string cannot hold U+0000). fromJSON is the one builtin that makes them.
  controlCodes = genList (n: n + 1) 31 ++ [ 127 ];
  controlChars = map (n: fromJSON ''"\u00${hexByte n}"'') controlCodes;
  controlEscapes = map (
    n:
    {
      "8" = "\\b";
      "9" = "\\t";
      "10" = "\\n";
      "12" = "\\f";
      "13" = "\\r";
    }
    .${toString n} or "\\u00${hexByte n}"
  ) controlCodes;

  quote = s: ''"${replaceStrings ([ "\\" ''"'' ] ++ controlChars) ([ "\\\\" ''\"'' ] ++ controlEscapes) s}"'';

  key = k: if match "[A-Za-z0-9_-]+" k != null then k else quote k;
  dotted = path: concatStringsSep "." (map key path);

  isTable = v: isAttrs v && !(v ? outPath);
  isTableArray = v: isList v && v != [ ] && all isTable v;

  float =
    f:
    let
      text = toJSON f;
    in
    if match "-?[0-9]+" text != null then text + ".0" else text;

  value =
    v:
    let
      type = typeOf v;
    in
    if type == "string" then
      quote v
    else if type == "path" || (isAttrs v && v ? outPath) then
      quote "${v}"
    else if type == "bool" then
      (if v then "true" else "false")
    else if type == "int" then
      toString v
    else if type == "float" then
      float v
    else if type == "list" then
      "[" + concatStringsSep ", " (map value v) + "]"
    else if type == "set" then
      inlineTable v
    else if type == "null" then
      throw "toml.nix: null inside an array has no TOML form"
    else
      throw "toml.nix: a ${type} has no TOML form";

  present = attrs: filter (k: attrs.${k} != null) (attrNames attrs);

  inlineTable =
    attrs: "{ " + concatStringsSep ", " (map (k: "${key k} = ${value attrs.${k}}") (present attrs)) + " }";

  # The key = value lines of one table, then its sub-tables, then its arrays of tables (TOML wants plain keys first).
  table =
    path: attrs:
    let
      keys = present attrs;
      plain = filter (k: !(isTable attrs.${k}) && !(isTableArray attrs.${k})) keys;
      tables = filter (k: isTable attrs.${k}) keys;
      arrays = filter (k: isTableArray attrs.${k}) keys;
      lines = map (k: "${key k} = ${value attrs.${k}}\n") plain;
      sub = map (k: "\n[${dotted (path ++ [ k ])}]\n" + table (path ++ [ k ]) attrs.${k}) tables;
      arr = map (
        k:
        concatStringsSep "" (
          map (item: "\n[[${dotted (path ++ [ k ])}]]\n" + table (path ++ [ k ]) item) attrs.${k}
        )
      ) arrays;
    in
    concatStringsSep "" (lines ++ sub ++ arr);

  render =
    attrs:
    if isTable attrs then
      let
        text = table [ ] attrs;
      in
      # A document that starts with a table header gets no leading blank line.
      if builtins.substring 0 1 text == "\n" then
        builtins.substring 1 (builtins.stringLength text) text
      else
        text
    else
      throw "toml.nix: a TOML document is an attribute set";
in
{
  inherit render;
}
