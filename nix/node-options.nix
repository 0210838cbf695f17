# The node file's fields as the NixOS module declares them: default, bounds, choices. Plain data (no lib), so
# tests/test_nix.py evaluates it offline and compares every field, both ways, with the appliance's msgspec structs
# (appliance/config.py and the settings modules): a field added on either side without the other fails that test.
#
# Per field:
#   default   the value the module renders when the operator sets none (absent: the field is required);
#             null: left out of the node file, as the Python side's unset
#   min, max  bounds of a number (the struct's ge/le); itemMin/itemMax for a list's items
#   choices   the values of an enumeration (the struct's Literal)
#   layout    true: a path of the NixOS layout (units.toml's State/Cache/Runtime directories), not the Python
#             default (which points into a user's home for `lpa serve` on a laptop)
#   setBy     a top-level option of the module sets it (secrets by path, GPUs); the field is read-only in settings
# Patterns (addresses, model ids) are not repeated here: Nix's regular expressions are not Python's. The module
# checks the rendered file with the appliance's own loader at build time instead.
{
  worker = {
    listen.default = "127.0.0.1:8000";
    token_file = {
      default = null;
      setBy = "tokenFile";
    };
    model_dir = {
      default = "/var/lib/livepeer-appliance/models";
      layout = true;
    };
    catalog_dir.default = null;
    intra_op_threads = {
      default = 0;
      min = 0;
      max = 256;
    };
    inference_niceness = {
      default = 5;
      min = 0;
      max = 19;
    };
    max_body_bytes = {
      default = 16777216;
      min = 1024;
      max = 1073741824;
    };
    body_timeout_seconds = {
      default = 30.0;
      min = 0.1;
      max = 3600.0;
    };
    header_timeout_seconds = {
      default = 10.0;
      min = 0.1;
      max = 3600.0;
    };
    max_image_pixels = {
      default = 4194304;
      min = 64;
      max = 268435456;
    };
    log_level = {
      default = "info";
      choices = [
        "debug"
        "info"
        "warning"
        "error"
      ];
    };
    gpus = {
      default = [ 0 ];
      itemMin = 0;
      itemMax = 63;
      setBy = "gpus";
    };
  };

  # One [[models]] entry.
  models = {
    model = { };
    capability.choices = [
      "upscale"
      "segmentation"
      "depth"
      "style-transfer"
    ];
    model_id.default = null;
    capacity = {
      default = 1;
      min = 1;
      max = 64;
    };
    queue = {
      default = 2;
      min = 0;
      max = 256;
    };
    warm.default = true;
    # A table (null: off). `fields` lists its own fields, in the same terms; tests/test_nix.py checks them too.
    batch = {
      default = null;
      fields = {
        max_size = {
          min = 2;
          max = 64;
        };
        max_wait_ms = {
          default = 5.0;
          min = 0.1;
          max = 1000.0;
        };
      };
    };
  };

  orchestrator = {
    role = {
      default = "orchestrator";
      choices = [
        "orchestrator"
        "remote-worker"
      ];
    };
    orch_addr.default = null;
    network = {
      default = "offchain";
      choices = [
        "offchain"
        "arbitrum-one-mainnet"
      ];
    };
    service_addr.default = null;
    eth_url.default = null;
    eth_acct_addr.default = null;
    eth_password_file = {
      default = null;
      setBy = "ethPasswordFile";
    };
    orch_secret_file = {
      default = null;
      setBy = "orchSecretFile";
    };
    nvidia.default = null;
    monitor.default = true;
    worker_url.default = null;
    runner_image.default = "livepeer-appliance/external:1";
    # The folder of the orchestrator unit's EnvironmentFile in systemd/units.toml (the module asserts it).
    config_dir = {
      default = "/etc/livepeer-appliance/livepeer";
      layout = true;
    };
    byoc_url.default = null;
    byoc_verify_tls.default = false;
    byoc_interval_seconds = {
      default = 30.0;
      min = 0.2;
      max = 3600.0;
    };
    extra_flags.default = { };
  };

  engines = {
    precision = {
      default = "fp16";
      choices = [
        "fp32"
        "fp16"
        "int8"
      ];
    };
    optimization_level = {
      default = 3;
      min = 0;
      max = 5;
    };
    hardware_compatibility = {
      default = "none";
      choices = [
        "none"
        "same-compute-capability"
        "ampere-plus"
      ];
    };
    cache_dir = {
      default = "/var/cache/livepeer-appliance/engines";
      layout = true;
    };
  };

  # [[pricing]] rules are free-form here (decimal strings, per-gateway maps): the build-time check validates them.
  pricing.default = [ ];
}
