"""pitunnel: reverse SSH tunnels from Pis behind NAT to a VPS, provisioned with Fabric."""

__version__ = "0.1.0"
