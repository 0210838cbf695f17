# node.example.toml as `services.livepeer-appliance.settings`: the node the example image and the VM test run.
# tests/test_nix.py checks it says what node.example.toml says, but for the three paths where NixOS has its own
# layout (worker.model_dir, orchestrator.config_dir, engines.cache_dir: the module's defaults), and that the file
# the module renders from it loads in the appliance.
{
  worker = {
    listen = "127.0.0.1:8000";
    intra_op_threads = 0;
    inference_niceness = 5;
    max_body_bytes = 16777216;
    max_image_pixels = 4194304;
    log_level = "info";
    gpus = [ 0 ];
  };

  models = [
    {
      model = "waifu2x-upconv7";
      capability = "upscale";
      capacity = 1;
      queue = 2;
      warm = true;
    }
    {
      model = "u2netp";
      capability = "segmentation";
      capacity = 1;
    }
    {
      # PP-OCRv4's dense map stands in for Depth-Anything on the CPU; a GPU node serves depth-anything-v2-small.
      model = "ppocr-v4-det";
      capability = "depth";
      capacity = 1;
    }
  ];

  orchestrator = {
    role = "orchestrator";
    network = "offchain";
    monitor = true;
  };

  pricing = [
    {
      capability = "upscale";
      unit = "frame";
      width = 512;
      height = 512;
      price = "0.0005";
      currency = "USD";
    }
    {
      capability = "segmentation";
      unit = "second";
      price = "0.002";
      currency = "USD";
    }
    {
      capability = "depth";
      unit = "second";
      price = "0.001";
      currency = "USD";
    }
  ];

  engines = {
    precision = "fp16";
    optimization_level = 3;
    hardware_compatibility = "none";
  };
}
