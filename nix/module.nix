# services.livepeer-appliance: a Livepeer AI orchestrator node (the appliance's inference workers, go-livepeer, and
# the oneshots that fetch models and build engines) from one node file, given here as `settings`.
#
# The units and their sandboxing are systemd/units.toml's, read at evaluation time through ./units.nix: the same
# data Ansible installs on other distributions. NVIDIA's driver is the host's business (hardware.nvidia, or
# hardware.graphics); the GPU units' DeviceAllow lists its devices, and their library path its driver link.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    hasPrefix
    importTOML
    literalExpression
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    removePrefix
    types
    ;

  cfg = config.services.livepeer-appliance;

  unitData = importTOML ../systemd/units.toml;
  nixosUnitData = importTOML ./units-nixos.toml;
  schema = import ./node-options.nix;
  toml = import ./toml.nix;
  settingsFormat = pkgs.formats.toml { };

  # go-livepeer's files: where the orchestrator unit reads them, and where the render unit writes them.
  configDir = dirOf unitData.units."livepeer-orchestrator.service".Service.EnvironmentFile;
  runtimeDir = "/run/${nixosUnitData.units."livepeer-render.service".Service.RuntimeDirectory}";

  # The node file, checked with the appliance's own loader (types, bounds, patterns, cross-field rules).
  renderedNode = pkgs.writeText "livepeer-node.toml" (toml.render cfg.settings);
  nodeFile =
    if cfg.checkNodeFile then
      pkgs.runCommand "livepeer-node.toml" { nativeBuildInputs = [ cfg.package ]; } ''
        HOME="$TMPDIR" lpa node instances --node ${renderedNode} > /dev/null
        cp ${renderedNode} "$out"
      ''
    else
      renderedNode;

  # go-livepeer asks Docker for orchestrator.runner_image: an empty image, imported once.
  emptyImage = pkgs.runCommand "livepeer-empty-image.tar" { } ''tar -cf "$out" --files-from /dev/null'';
  runnerImage = pkgs.writeShellScript "livepeer-runner-image" ''
    docker=${config.virtualisation.docker.package}/bin/docker
    image=${lib.escapeShellArg cfg.settings.orchestrator.runner_image}
    "$docker" image inspect "$image" > /dev/null 2>&1 || "$docker" import ${emptyImage} "$image"
  '';

  units = import ./units.nix {
    units = unitData;
    extraUnits.units = lib.filterAttrs (
      name: _: cfg.docker || name != "livepeer-runner-image.service"
    ) nixosUnitData.units;
    paths = {
      lpa = lib.getExe cfg.package;
      node = "${nodeFile}";
      livepeer = lib.getExe cfg.livepeerPackage;
      runnerImage = "${runnerImage}";
    };
    inherit (cfg) user group gpus;
    gpuEnvironment.LD_LIBRARY_PATH = "${pkgs.addDriverRunpath.driverLink}/lib";
  };

  # `lpa` for the operator, reading this node's file unless told otherwise.
  lpaForNode = pkgs.writeShellScriptBin "lpa" ''
    export LPA_NODE="''${LPA_NODE:-${nodeFile}}"
    exec ${lib.getExe cfg.package} "$@"
  '';

  # A path given as a string stays out of the store; a Nix path literal would be copied into it.
  secretFile =
    name: what:
    mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/run/secrets/livepeer/${name}";
      description = ''
        Path of a file holding ${what}, readable by the service user. It is named in the node file and read at
        run time: the secret never enters the Nix store. Give it as a string, not a Nix path.
      '';
    };

  # An option for one node file field, typed, bounded and defaulted from ./node-options.nix.
  fieldType =
    spec:
    if spec ? choices then
      types.enum spec.choices
    else if spec ? itemMin then
      types.nonEmptyListOf (types.ints.between spec.itemMin spec.itemMax)
    else if spec ? min && builtins.isFloat spec.default then
      types.numbers.between spec.min spec.max
    else if spec ? min then
      types.ints.between spec.min spec.max
    else if !(spec ? default) then
      types.str
    else if spec.default == null then
      types.nullOr types.str
    else if builtins.isBool spec.default then
      types.bool
    else if builtins.isAttrs spec.default then
      types.attrsOf types.str
    else
      types.str;
  field =
    spec: attrs:
    mkOption (
      {
        type = fieldType spec;
      }
      // lib.optionalAttrs (spec ? default) { inherit (spec) default; }
      // attrs
    );
  section =
    description: example: options:
    mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        inherit options;
      };
      default = { };
      inherit description example;
    };

  inherit (schema) worker orchestrator engines;
  model = schema.models;
in
{
  options.services.livepeer-appliance = {
    enable = mkEnableOption "the Livepeer AI orchestrator appliance (inference workers, go-livepeer, models, engines)";

    package = mkOption {
      type = types.package;
      description = "The appliance (`lpa`): the flake's `packages.<system>.appliance`, which its module sets.";
      example = literalExpression "inputs.livepeer-appliance.packages.x86_64-linux.appliance";
    };

    livepeerPackage = mkPackageOption pkgs "livepeer" {
      example = "inputs.nixpkgs-unstable.legacyPackages.x86_64-linux.livepeer";
      extraDescription = "go-livepeer, run as the node's orchestrator (or remote worker).";
    };

    user = mkOption {
      type = types.str;
      default = "livepeer";
      example = "livepeer-node";
      description = ''
        User the services run as. The module creates `livepeer`; another name must exist. The secret files
        must be readable by it.
      '';
    };

    group = mkOption {
      type = types.str;
      default = "livepeer";
      example = "livepeer-node";
      description = "Group the services run as. The module creates `livepeer`; another name must exist.";
    };

    gpus = mkOption {
      type = fieldType worker.gpus;
      inherit (worker.gpus) default;
      example = [
        0
        1
        2
        3
      ];
      description = ''
        GPU indexes, one inference worker each (`livepeer-worker@N.service`, seeing only GPU N and listening on
        `settings.worker.listen`'s port + N). A node without a GPU lists `[ 0 ]`. Sets `settings.worker.gpus`.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 8935;
      example = 18935;
      description = ''
        go-livepeer's service port: gateways reach the orchestrator there. It must be the port of
        `settings.orchestrator.service_addr` when that is set. The workers' ports stay on loopback.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Open {option}`port` (TCP) in the firewall, for gateways.";
    };

    tokenFile = secretFile "worker-token" "the bearer token go-livepeer sends the workers (worker.token_file)";
    orchSecretFile = secretFile "orch-secret" "the orchestrator secret shared with remote workers (orchestrator.orch_secret_file)";
    ethPasswordFile = secretFile "eth-password" "the Ethereum account's password (orchestrator.eth_password_file)";

    docker = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Run Docker and import the empty image named in `settings.orchestrator.runner_image`: go-livepeer with
        -aiWorker asks Docker for it at start, even when every runner is one of the appliance's workers.
      '';
    };

    checkNodeFile = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Check the rendered node file with the appliance's own loader when the system is built, so that a wrong
        setting fails `nixos-rebuild` instead of the services at boot.
      '';
    };

    nodeFile = mkOption {
      type = types.path;
      readOnly = true;
      default = nodeFile;
      defaultText = literalExpression "the node file rendered from settings";
      example = literalExpression "config.services.livepeer-appliance.nodeFile";
      description = "The rendered node file (what `lpa --node` reads; the `lpa` this module installs uses it).";
    };

    settings = mkOption {
      description = ''
        The node file (see node.example.toml in the appliance's source), as Nix values rendered to TOML. Fields
        not declared here are passed through as they are; `null` leaves a field out (the appliance's default).
        Paths default to this module's layout: models in /var/lib/livepeer-appliance/models, engines in
        /var/cache/livepeer-appliance/engines, go-livepeer's files in ${configDir}.
      '';
      example = literalExpression ''
        {
          models = [ { model = "waifu2x-upconv7"; capability = "upscale"; } ];
          pricing = [
            { capability = "upscale"; unit = "frame"; width = 512; height = 512; price = "0.0005"; currency = "USD"; }
          ];
          orchestrator.service_addr = "203.0.113.7:8935";
        }
      '';
      default = { };
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          worker = section "[worker]: how the inference workers serve." { log_level = "debug"; } {
            listen = field worker.listen {
              description = "Address of instance 0 (instance N listens on its port + N). Loopback: go-livepeer is the only caller.";
              example = "127.0.0.1:9000";
            };
            token_file = field worker.token_file {
              default = cfg.tokenFile;
              defaultText = literalExpression "config.services.livepeer-appliance.tokenFile";
              description = "File holding the bearer token go-livepeer sends; null: no token. Set through {option}`services.livepeer-appliance.tokenFile`.";
              example = "/run/secrets/livepeer/worker-token";
            };
            model_dir = field worker.model_dir {
              description = "Where verified model files live (the models unit fetches them there).";
              example = literalExpression ''"''${inputs.livepeer-appliance.packages.x86_64-linux.models}"'';
            };
            catalog_dir = field worker.catalog_dir {
              description = "Folder of model manifests; null: the catalog that ships with the appliance.";
              example = "/etc/livepeer-appliance/models";
            };
            intra_op_threads = field worker.intra_op_threads {
              description = "onnxruntime threads per session; 0 lets onnxruntime choose.";
              example = 4;
            };
            inference_niceness = field worker.inference_niceness {
              description = "Added to the nice value of inference threads, to favour the HTTP loop over inference.";
              example = 5;
            };
            max_body_bytes = field worker.max_body_bytes {
              description = "Largest request body the worker accepts.";
              example = 33554432;
            };
            body_timeout_seconds = field worker.body_timeout_seconds {
              description = "Seconds a request's whole body may take to arrive; a slower upload is answered 400 and its connection closed.";
              example = 60.0;
            };
            header_timeout_seconds = field worker.header_timeout_seconds {
              description = "Seconds a connection's next request head may take to arrive; a slower or silent connection is closed.";
              example = 30.0;
            };
            max_image_pixels = field worker.max_image_pixels {
              description = "Largest decoded image (width × height) the worker accepts.";
              example = 16777216;
            };
            log_level = field worker.log_level {
              description = "The workers' log level (JSON lines in the journal).";
              example = "debug";
            };
            gpus = field worker.gpus {
              default = cfg.gpus;
              defaultText = literalExpression "config.services.livepeer-appliance.gpus";
              description = "One worker instance per GPU index. Set through {option}`services.livepeer-appliance.gpus`.";
              example = [
                0
                1
              ];
            };
          };

          models = mkOption {
            description = "[[models]]: the served models, each a catalog name under one capability.";
            example = literalExpression ''[ { model = "u2netp"; capability = "segmentation"; capacity = 2; } ]'';
            type = types.nonEmptyListOf (
              types.submodule {
                freeformType = settingsFormat.type;
                options = {
                  model = field model.model {
                    description = "A manifest name of the catalog.";
                    example = "waifu2x-upconv7";
                  };
                  capability = field model.capability {
                    description = "The capability it serves (the manifest's).";
                    example = "upscale";
                  };
                  model_id = field model.model_id {
                    description = "What go-livepeer and clients call it; null: the catalog name.";
                    example = "waifu2x/upconv7";
                  };
                  capacity = field model.capacity {
                    description = "Inferences at once.";
                    example = 2;
                  };
                  queue = field model.queue {
                    description = "Requests that may wait for a slot; past capacity and queue the worker answers 500 at once.";
                    example = 4;
                  };
                  warm = field model.warm {
                    description = "Run one inference at start-up, so the first request pays no lazy initialisation.";
                    example = false;
                  };
                  batch = mkOption {
                    type = types.nullOr (
                      types.submodule {
                        options = {
                          max_size = mkOption {
                            type = types.ints.between model.batch.fields.max_size.min model.batch.fields.max_size.max;
                            description = "Largest batch (requests stacked into one model run); at most capacity.";
                            example = 4;
                          };
                          max_wait_ms = field model.batch.fields.max_wait_ms {
                            description = "How long a batch's first request waits for others to join it.";
                            example = 2.5;
                          };
                        };
                      }
                    );
                    default = model.batch.default;
                    description = ''
                      Dynamic batching; null (the default) turns it off. Only for models whose manifest declares a
                      dynamic batch dimension. On the CPU it costs throughput and latency (bench/batching.py).
                    '';
                    example = {
                      max_size = 4;
                      max_wait_ms = 5;
                    };
                  };
                };
              }
            );
          };

          orchestrator =
            section "[orchestrator]: how go-livepeer runs (rendered into its -config file)."
              { service_addr = "203.0.113.7:8935"; }
              {
                role = field orchestrator.role {
                  description = "`orchestrator` takes jobs from gateways; `remote-worker` joins the orchestrator at orch_addr.";
                  example = "remote-worker";
                };
                orch_addr = field orchestrator.orch_addr {
                  description = "The orchestrator a remote worker joins.";
                  example = "10.0.0.5:8935";
                };
                network = field orchestrator.network {
                  description = "`offchain` to try things out; on-chain needs service_addr, eth_url, eth_acct_addr and ethPasswordFile.";
                  example = "arbitrum-one-mainnet";
                };
                service_addr = field orchestrator.service_addr {
                  description = "The public address gateways use; its port is {option}`services.livepeer-appliance.port`.";
                  example = "203.0.113.7:8935";
                };
                eth_url = field orchestrator.eth_url {
                  description = "Ethereum JSON-RPC URL (on-chain).";
                  example = "https://arb1.arbitrum.io/rpc";
                };
                eth_acct_addr = field orchestrator.eth_acct_addr {
                  description = "The orchestrator's Ethereum address (on-chain).";
                  example = "0x0000000000000000000000000000000000000000";
                };
                eth_password_file = field orchestrator.eth_password_file {
                  default = cfg.ethPasswordFile;
                  defaultText = literalExpression "config.services.livepeer-appliance.ethPasswordFile";
                  description = "Set through {option}`services.livepeer-appliance.ethPasswordFile`.";
                  example = "/run/secrets/livepeer/eth-password";
                };
                orch_secret_file = field orchestrator.orch_secret_file {
                  default = cfg.orchSecretFile;
                  defaultText = literalExpression "config.services.livepeer-appliance.orchSecretFile";
                  description = "Set through {option}`services.livepeer-appliance.orchSecretFile`.";
                  example = "/run/secrets/livepeer/orch-secret";
                };
                nvidia = field orchestrator.nvidia {
                  description = "go-livepeer's -nvidia: GPUs it may use (`all` or indexes).";
                  example = "all";
                };
                monitor = field orchestrator.monitor {
                  description = "Serve go-livepeer's Prometheus metrics.";
                  example = false;
                };
                worker_url = field orchestrator.worker_url {
                  description = "Where go-livepeer reaches worker instance 0; null: http:// and the listen address.";
                  example = "http://10.0.0.7:8000";
                };
                runner_image = field orchestrator.runner_image {
                  description = "The image named in -aiRunnerImageOverrides, so go-livepeer never pulls one for external runners.";
                  example = "livepeer-appliance/external:2";
                };
                config_dir = field orchestrator.config_dir {
                  description = "Where `lpa render` writes go-livepeer's files: fixed by the orchestrator unit's EnvironmentFile.";
                  example = configDir;
                };
                byoc_url = field orchestrator.byoc_url {
                  description = "Where the workers register their BYOC capabilities (needs orchSecretFile); null: no registration.";
                  example = "https://127.0.0.1:8935";
                };
                byoc_verify_tls = field orchestrator.byoc_verify_tls {
                  description = "Verify the orchestrator's TLS certificate when registering (it is self-signed by default).";
                  example = true;
                };
                byoc_interval_seconds = field orchestrator.byoc_interval_seconds {
                  description = "How often the workers register again.";
                  example = 10.0;
                };
                extra_flags = field orchestrator.extra_flags {
                  description = "Any other go-livepeer flag by name (no dash); flags the fields above manage are refused.";
                  example = {
                    v = "6";
                  };
                };
              };

          engines = section "[engines]: TensorRT engines built for this host's GPUs." { precision = "fp32"; } {
            precision = field engines.precision {
              description = "Engine precision.";
              example = "fp32";
            };
            optimization_level = field engines.optimization_level {
              description = "TensorRT builder level, 0 (fast build) to 5 (slowest build, fastest engine).";
              example = 5;
            };
            hardware_compatibility = field engines.hardware_compatibility {
              description = "Which GPUs an engine runs on: this model only, the same compute capability, or Ampere and newer.";
              example = "ampere-plus";
            };
            cache_dir = field engines.cache_dir {
              description = "Where built engines are kept.";
              example = "/var/cache/livepeer-appliance/engines";
            };
          };

          pricing = mkOption {
            type = types.listOf settingsFormat.type;
            inherit (schema.pricing) default;
            description = "[[pricing]]: prices per capability or model; amounts are decimal strings.";
            example = literalExpression ''
              [ { capability = "depth"; unit = "second"; price = "0.001"; currency = "USD"; } ]
            '';
          };
        };
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.settings.orchestrator.config_dir == configDir;
        message = "services.livepeer-appliance.settings.orchestrator.config_dir must be ${configDir}: the orchestrator unit reads its EnvironmentFile there.";
      }
      {
        assertion = cfg.settings.worker.gpus == cfg.gpus;
        message = "services.livepeer-appliance.settings.worker.gpus differs from services.livepeer-appliance.gpus, which starts the workers: set gpus only.";
      }
      {
        assertion =
          cfg.settings.orchestrator.service_addr == null
          || lib.hasSuffix ":${toString cfg.port}" cfg.settings.orchestrator.service_addr;
        message = "services.livepeer-appliance.settings.orchestrator.service_addr must use port ${toString cfg.port} (services.livepeer-appliance.port).";
      }
      {
        assertion = builtins.all (path: path == null || !(hasPrefix builtins.storeDir path)) [
          cfg.tokenFile
          cfg.orchSecretFile
          cfg.ethPasswordFile
        ];
        message = "services.livepeer-appliance: a secret file is in the Nix store, readable by every user; keep it outside (sops-nix, agenix, or a root-owned file).";
      }
    ];

    users.users = mkIf (cfg.user == "livepeer") {
      livepeer = {
        isSystemUser = true;
        inherit (cfg) group;
        home = "/var/lib/livepeer-appliance";
        description = "Livepeer appliance";
      };
    };
    # The units name `render` and `docker` in SupplementaryGroups: they must exist (docker's is empty without Docker).
    users.groups = mkMerge [
      (mkIf (cfg.group == "livepeer") { livepeer = { }; })
      {
        render = { };
        docker = { };
      }
    ];

    systemd.services = mkMerge [
      units.services
      # A new node file changes the workers' ExecStart; go-livepeer's unit does not name it, so say so.
      { livepeer-orchestrator.restartTriggers = [ nodeFile ]; }
    ];
    systemd.targets = units.targets;

    # go-livepeer's files (the worker's token among them) are rendered at boot into a runtime directory and seen
    # where the orchestrator unit reads them, as /etc/resolv.conf is with systemd-resolved.
    environment.etc.${removePrefix "/etc/" configDir}.source = runtimeDir;

    environment.systemPackages = [ lpaForNode ];

    virtualisation.docker.enable = mkIf cfg.docker true;

    networking.firewall.allowedTCPPorts = optional cfg.openFirewall cfg.port;
  };

  meta.maintainers = [ ];
}
