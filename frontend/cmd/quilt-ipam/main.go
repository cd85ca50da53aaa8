// Command quilt-ipam is a CNI IPAM plugin: a container runtime's main
// plugin (the reference bridge plugin, say) runs it to give a container's
// interface an address from quilt-runtime's IPAM. See package cniipam.
package main

import "github.com/quiltmesh/quilt-runtime/frontend/cniipam"

// version is set at build time (make build: -X main.version=...).
var version = "dev"

func main() { cniipam.Main(version) }
