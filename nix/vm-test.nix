# The example node booted in a VM (no network, no GPU): the oneshots run, the worker answers, and its answers are
# right: /health says OK, and an upscale of a real PNG comes back as a PNG twice the size. go-livepeer's unit is
# started too, but whether it serves is not asserted here (see nix/README.md).
#
#   nix build .#checks.x86_64-linux.vm -L
{
  pkgs,
  module,
  appliance,
}:
let
  # A real photograph (tests/data), as a small PNG.
  width = 96;
  height = 64;
  inputPng =
    pkgs.runCommand "upscale-input.png" { }
      ''
        ${appliance.venv}/bin/python -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").resize((${toString width}, ${toString height})).save(sys.argv[2], "PNG")' \
          ${../tests/data/grace_hopper.jpg} "$out"
      '';
in
pkgs.testers.runNixOSTest {
  name = "livepeer-appliance";

  nodes.machine = {
    imports = [
      module
      ./example.nix
    ];
    services.livepeer-appliance.package = appliance;
    virtualisation = {
      memorySize = 4096;
      cores = 2;
    };
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    import base64
    import json
    import re
    import struct

    # Exposure targets of systemd/units.toml's units, as tests/test_units.py holds the generated files to.
    EXPOSURE_LIMITS = {
        "livepeer-worker@0.service": 2.0,
        "livepeer-orchestrator.service": 3.0,
        "livepeer-models.service": 2.0,
        "livepeer-engines.service": 2.0,
    }

    machine.start()

    with subtest("the models are present and verified without network"):
        machine.wait_for_unit("livepeer-models.service")

    with subtest("no GPU: the engines oneshot is skipped by its condition"):
        machine.wait_until_succeeds(
            "test \"$(systemctl show -P ConditionTimestampMonotonic livepeer-engines.service)\" != 0"
        )
        machine.succeed("test \"$(systemctl show -P ConditionResult livepeer-engines.service)\" = no")

    with subtest("the worker reports ready (Type=notify) and its health is OK"):
        machine.wait_for_unit("livepeer-worker@0.service")
        health = json.loads(machine.succeed("curl -sSf http://127.0.0.1:8000/health"))
        assert health == {"status": "OK"}, health

    with subtest("a real PNG is upscaled 2x and comes back as a PNG data URL"):
        out = machine.succeed(
            "curl -sSf -F image=@${inputPng} -F prompt=upscale -F model_id=waifu2x-upconv7"
            " http://127.0.0.1:8000/m/upscale/waifu2x-upconv7/upscale"
        )
        url = json.loads(out)["images"][0]["url"]
        assert url.startswith("data:image/png;base64,"), url[:64]
        png = base64.b64decode(url.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
        size = struct.unpack(">II", png[16:24])
        assert size == (${toString (2 * width)}, ${toString (2 * height)}), size

    with subtest("go-livepeer's files are rendered where its unit reads them"):
        machine.wait_for_unit("livepeer-render.service")
        machine.succeed("grep -q LIVEPEER_CONFIG=/etc/livepeer-appliance/livepeer/livepeer.conf /etc/livepeer-appliance/livepeer/livepeer.env")
        machine.succeed("grep -q 'http://127.0.0.1:8000/m/upscale/waifu2x-upconv7' /etc/livepeer-appliance/livepeer/aiModels.json")
        machine.succeed("test \"$(stat -c %U:%a /run/livepeer-appliance/livepeer/aiModels.json)\" = livepeer:600")

    with subtest("Docker holds the empty image go-livepeer asks for"):
        machine.wait_for_unit("livepeer-runner-image.service")
        machine.succeed("docker image inspect livepeer-appliance/external:1")

    with subtest("the operator's lpa reads this node's file"):
        instances = json.loads(machine.succeed("lpa node instances"))
        assert [i["unit"] for i in instances] == ["livepeer-worker@0.service"], instances

    with subtest("the units are as sandboxed as systemd/units.toml's"):
        for unit, limit in EXPOSURE_LIMITS.items():
            report = machine.succeed(f"systemd-analyze security --no-pager {unit}")
            found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
            assert found, report
            assert float(found.group(1)) <= limit, f"{unit}: exposure {found.group(1)} > {limit}"
  '';
}
