// Package dataplane is the proxy's data plane core: it binds listeners,
// matches filter chains, terminates TLS (mTLS with the workload identity and
// gateway credentials), serves HTTP through the connection manager's filters
// (JWT, RBAC, Istio stats, router), proxies TCP, and applies each xDS
// snapshot atomically: everything is built first and swapped in one step, or
// nothing changes.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mizzen-mesh/mizzen/internal/proxy/config"
)

// Options configures a Dataplane.
type Options struct {
	Node    *config.Node
	Secrets config.Secrets
	// Engine routes and builds clusters; nil = DefaultEngine.
	Engine Engine
	Log    *slog.Logger
	// Registry receives Istio's standard metrics; nil = not registered.
	Registry prometheus.Registerer
	// BindAddress replaces the unspecified address (0.0.0.0, ::) of
	// listeners that bind for real; tests use 127.0.0.1.
	BindAddress string
	// OriginalDst returns the destination a captured connection was
	// redirected from; nil uses SO_ORIGINAL_DST.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
}

// Dataplane serves the listeners of the last applied snapshot.
type Dataplane struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	cur atomic.Pointer[state]

	mu      sync.Mutex // serialises Apply, Drain and Close
	sockets map[netip.AddrPort]*socket
	closed  bool

	draining atomic.Bool
	tcpConns sync.Map // *tcpConn → struct{}
	wg       sync.WaitGroup
}

// New returns a Dataplane with no listeners; Apply gives it some.
func New(opts Options) (*Dataplane, error) {
	if opts.Node == nil {
		return nil, errors.New("dataplane: node is required")
	}
	if opts.Engine == nil {
		opts.Engine = DefaultEngine{}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.OriginalDst == nil {
		opts.OriginalDst = originalDst
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	d := &Dataplane{
		opts:    opts,
		log:     opts.Log,
		metrics: m,
		sockets: map[netip.AddrPort]*socket{},
	}
	return d, nil
}

// Ready reports whether a snapshot has been applied and the data plane is
// not draining.
func (d *Dataplane) Ready() bool {
	return d.cur.Load() != nil && !d.draining.Load()
}

// Apply builds everything snap describes and then swaps it in. On error
// nothing changes and the error names the resource at fault.
func (d *Dataplane) Apply(snap *config.Snapshot) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("dataplane is closed")
	}
	prev := d.cur.Load()
	next, err := d.build(snap, prev)
	if err != nil {
		return err
	}
	// Bind the sockets of new addresses before anything changes, so a
	// failed bind leaves the old configuration in place.
	bound := map[netip.AddrPort]*socket{}
	for addr := range next.bound {
		if _, ok := d.sockets[addr]; ok || d.draining.Load() {
			// Kept sockets stay; a draining data plane binds nothing.
			continue
		}
		s, err := listen(addr)
		if err != nil {
			for _, s := range bound {
				s.ln.Close()
			}
			next.discard(prev)
			return fmt.Errorf("listener %s: %w", next.bound[addr].name, err)
		}
		bound[addr] = s
	}

	// Commit: start the new connection managers, publish the state, then
	// start accepting on new sockets and retire what is gone.
	next.start()
	d.cur.Store(next)
	next.activate()
	for addr, s := range bound {
		d.sockets[addr] = s
		d.wg.Add(1)
		go d.accept(s)
	}
	for addr, s := range d.sockets {
		if _, ok := next.bound[addr]; !ok {
			s.ln.Close()
			delete(d.sockets, addr)
		}
	}
	if prev != nil {
		prev.retire(next)
		if prev.upstreams != nil {
			prev.upstreams.Release(next.upstreams)
		}
	}
	d.log.Info("applied snapshot", "listeners", len(next.listeners), "routes", len(next.routes), "sockets", len(d.sockets))
	return nil
}

// Drain stops accepting on every listener, lets in-flight HTTP requests and
// TCP connections finish, and closes the rest when ctx ends.
func (d *Dataplane) Drain(ctx context.Context) error {
	d.draining.Store(true)
	d.mu.Lock()
	for addr, s := range d.sockets {
		s.ln.Close()
		delete(d.sockets, addr)
	}
	st := d.cur.Load()
	d.mu.Unlock()
	var errs []error
	if st != nil {
		var wg sync.WaitGroup
		var emu sync.Mutex
		for _, srv := range st.servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := srv.shutdown(ctx); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	if err := d.waitTCP(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops everything at once.
func (d *Dataplane) Close() error {
	d.draining.Store(true)
	d.mu.Lock()
	d.closed = true
	for addr, s := range d.sockets {
		s.ln.Close()
		delete(d.sockets, addr)
	}
	st := d.cur.Load()
	d.mu.Unlock()
	if st != nil {
		for _, srv := range st.servers {
			srv.close()
		}
		for _, h := range st.hcms {
			h.closeTracer(0)
		}
		if st.upstreams != nil {
			st.upstreams.Release(nil)
		}
	}
	d.tcpConns.Range(func(k, _ any) bool {
		k.(*tcpConn).close()
		return true
	})
	d.wg.Wait()
	return nil
}

// ConfigDump returns the applied resources as JSON, in the shape of
// Envoy's /config_dump (one entry per resource type, sorted by name).
func (d *Dataplane) ConfigDump() ([]byte, error) {
	st := d.cur.Load()
	dump := map[string]any{}
	if st != nil {
		add := func(kind string, names []string, get func(string) proto.Message) error {
			sort.Strings(names)
			var out []any
			for _, n := range names {
				b, err := protojson.Marshal(get(n))
				if err != nil {
					return fmt.Errorf("%s %s: %w", kind, n, err)
				}
				out = append(out, jsonRaw(b))
			}
			dump[kind] = out
			return nil
		}
		s := st.snap
		if err := add("listeners", keys(s.Listeners), func(n string) proto.Message { return s.Listeners[n] }); err != nil {
			return nil, err
		}
		if err := add("routes", keys(s.Routes), func(n string) proto.Message { return s.Routes[n] }); err != nil {
			return nil, err
		}
		if err := add("clusters", keys(s.Clusters), func(n string) proto.Message { return s.Clusters[n] }); err != nil {
			return nil, err
		}
		if err := add("endpoints", keys(s.Endpoints), func(n string) proto.Message { return s.Endpoints[n] }); err != nil {
			return nil, err
		}
		// Secrets are named, never dumped: they hold private keys.
		dump["secrets"] = keys(s.Secrets)
		dump["versions"] = s.Versions
	}
	return marshalIndent(dump)
}
