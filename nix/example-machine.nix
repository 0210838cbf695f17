# What the example node needs to boot as a machine of its own (`nixosConfigurations.example`, `packages.image`):
# a root file system, a boot loader and a way in. The image builder puts its own partitions over these.
{ lib, ... }:
{
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/ESP";
    fsType = "vfat";
  };
  boot.loader.systemd-boot.enable = true;
  boot.growPartition = true;

  # Log in with your key: set users.users.root.openssh.authorizedKeys.keys in a module of your own.
  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  networking.hostName = "livepeer-node";
  networking.useDHCP = lib.mkDefault true;
  # go-livepeer's service port, for gateways.
  services.livepeer-appliance.openFirewall = true;
}
