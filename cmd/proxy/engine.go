package main

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
	"github.com/mizzen-mesh/mizzen/internal/proxy/capture"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane"
)

// newDataplane builds the data plane the agent drives: connections, TLS,
// filters and telemetry (internal/proxy/dataplane) around the routing
// engine of internal/proxy/router and internal/proxy/upstream
// (dataplane.DefaultEngine), with captured connections' original
// destinations read by internal/proxy/capture.
func newDataplane(o agent.DataplaneOptions) (agent.Dataplane, error) {
	return dataplane.New(dataplane.Options{
		Node: o.Node, Secrets: o.Secrets, Log: o.Log, Registry: o.Registry,
		BindAddress: o.BindAddress,
		Engine:      dataplane.DefaultEngine{},
		OriginalDst: originalDst,
	})
}

func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination of a %T", c)
	}
	return capture.OriginalDst(tc)
}
