# systemd/units.toml (the appliance's one source of units and hardening) as NixOS `systemd.services` / `systemd.targets`
# definitions. Builtins only, so tests/test_nix.py evaluates it offline and compares it with systemd/generate.py.
#
# Every unit gets exactly the settings generate.py writes: its [Service] keys over its hardening profiles (merged in
# order, a later profile's key winning), `{lpa}` / `{node}` / `{livepeer}` replaced by `paths`. What NixOS adds is
# kept out of serviceConfig: the units of ./units-nixos.toml (same shape, same profiles), `environment` for units
# with the gpu profile, and the worker instances (a template's WantedBy becomes its target's Wants per GPU).
{
  # builtins.fromTOML of systemd/units.toml.
  units,
  # builtins.fromTOML of ./units-nixos.toml: units only NixOS runs, hardened with units.toml's profiles.
  extraUnits ? { },
  # What the placeholders become: { lpa; node; livepeer; } of units.toml's [paths] (store paths in the module), and
  # those of ./units-nixos.toml.
  paths,
  user ? "livepeer",
  group ? "livepeer",
  # One instance of each template unit per GPU index (worker.gpus).
  gpus ? [ 0 ],
  # Environment of units with the gpu profile (NixOS: where the driver's libraries are).
  gpuEnvironment ? { },
}:
let
  inherit (builtins)
    attrNames
    concatMap
    elem
    filter
    foldl'
    isList
    isString
    listToAttrs
    mapAttrs
    match
    removeAttrs
    replaceStrings
    ;

  # units.toml's [paths] names, and any more the NixOS-only units use.
  placeholders = attrNames paths;
  unset = filter (name: !(paths ? ${name})) (attrNames units.paths);
  substitute =
    value:
    if isString value then
      replaceStrings (map (name: "{${name}}") placeholders) (map (name: paths.${name}) placeholders) value
    else if isList value then
      map substitute value
    else
      value;

  all = units.units // (extraUnits.units or { });

  # "livepeer-worker@.service" -> { base = "livepeer-worker@"; kind = "service"; template = true; }
  parse =
    name:
    let
      parts = match "(.+)\\.(service|target)" name;
    in
    if parts == null then
      throw "units.nix: ${name} is neither a .service nor a .target"
    else
      {
        base = builtins.elemAt parts 0;
        kind = builtins.elemAt parts 1;
        template = match ".*@" (builtins.elemAt parts 0) != null;
      };

  # [Unit] keys NixOS has options for (lists of unit names); every other key goes to unitConfig.
  unitLists = {
    Wants = "wants";
    Requires = "requires";
    Requisite = "requisite";
    After = "after";
    Before = "before";
    PartOf = "partOf";
    BindsTo = "bindsTo";
    Conflicts = "conflicts";
    OnFailure = "onFailure";
  };
  installLists = {
    WantedBy = "wantedBy";
    RequiredBy = "requiredBy";
    UpheldBy = "upheldBy";
  };
  asList = value: if isList value then value else [ value ];

  # What generate.py's service_settings() gives, own keys over the merged profiles, placeholders replaced.
  serviceSettings =
    unit:
    let
      hardening = foldl' (merged: profile: merged // units.hardening.${profile}) { } unit.profiles;
      merged = mapAttrs (_: substitute) (hardening // (unit.Service or { }));
    in
    merged
    // (if merged ? User then { User = user; } else { })
    // (if merged ? Group then { Group = group; } else { });

  unitSection =
    unit:
    let
      section = mapAttrs (_: substitute) (unit.Unit or { });
      known = attrNames unitLists ++ [
        "Description"
        "Documentation"
      ];
    in
    (if section ? Description then { description = section.Description; } else { })
    // (if section ? Documentation then { documentation = asList section.Documentation; } else { })
    // listToAttrs (
      map (key: {
        name = unitLists.${key};
        value = asList section.${key};
      }) (filter (key: section ? ${key}) (attrNames unitLists))
    )
    // {
      unitConfig = removeAttrs section known;
    };

  installSection =
    name: unit:
    let
      section = mapAttrs (_: substitute) (unit.Install or { });
      unknown = filter (key: !(installLists ? ${key})) (attrNames section);
    in
    if unknown != [ ] then
      throw "units.nix: ${name}: [Install] ${builtins.head unknown} has no NixOS option"
    else if (parse name).template then
      { } # realised as Wants= of the targets, one instance per GPU (see `instances` below)
    else
      listToAttrs (
        map (key: {
          name = installLists.${key};
          value = asList section.${key};
        }) (attrNames section)
      );

  definition =
    name: unit:
    unitSection unit
    // installSection name unit
    // (
      if (parse name).kind == "service" then
        {
          serviceConfig = serviceSettings unit;
        }
        // (if elem "gpu" unit.profiles then { environment = gpuEnvironment; } else { })
      else
        { }
    );

  # Each template's WantedBy targets want one instance per GPU: what `systemctl enable name@N` does elsewhere.
  templates = filter (name: (parse name).template) (attrNames all);
  instances = concatMap (
    name:
    concatMap (
      target:
      map (gpu: {
        inherit target;
        unit = "${(parse name).base}${toString gpu}.${(parse name).kind}";
      }) gpus
    ) (asList (all.${name}.Install.WantedBy or [ ]))
  ) templates;
  instancesFor = target: map (i: i.unit) (filter (i: i.target == target) instances);
  strays = filter (i: !(all ? ${i.target})) instances;

  ofKind =
    kind:
    listToAttrs (
      map
        (name: {
          name = (parse name).base;
          value =
            let
              def = definition name all.${name};
              extra = instancesFor name;
            in
            if extra == [ ] then def else def // { wants = (def.wants or [ ]) ++ extra; };
        })
        (filter (name: (parse name).kind == kind) (attrNames all))
    );
in
if unset != [ ] then
  throw "units.nix: no path given for {${builtins.head unset}}"
else if strays != [ ] then
  throw "units.nix: ${(builtins.head strays).unit} is wanted by ${(builtins.head strays).target}, not a unit here"
else
{
  services = ofKind "service";
  targets = ofKind "target";
  # The unit files' names, and for each the hardening profiles it takes (for the tests and the module's checks).
  profiles = mapAttrs (_: unit: unit.profiles) all;
  inherit instances;
}
