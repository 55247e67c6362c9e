package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

// ConnectionInfo describes one ADS stream in /debug/connections.
type ConnectionInfo struct {
	Stream    int64             `json:"stream"`
	Delta     bool              `json:"delta,omitempty"`
	Proxy     string            `json:"proxy"`
	Identity  string            `json:"identity"`
	Connected time.Time         `json:"connected"`
	Types     map[string]Status `json:"types"`
}

// Status is the state of one type on a stream.
type Status struct {
	Sent         string `json:"sent"`
	Acked        string `json:"acked,omitempty"`
	Rejected     string `json:"rejected,omitempty"`
	RejectReason string `json:"rejectReason,omitempty"`
	Resources    int    `json:"resources"`
}

// Connections lists the streams that sent their node, sorted by proxy.
func (s *Server) Connections() []ConnectionInfo {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		if st.node != nil {
			streams = append(streams, st)
		}
	}
	s.mu.Unlock()
	out := make([]ConnectionInfo, 0, len(streams))
	for _, st := range streams {
		ci := ConnectionInfo{Stream: st.key.id, Delta: st.key.delta, Proxy: st.node.id,
			Identity: st.identity.String(), Connected: st.connected, Types: map[string]Status{}}
		st.mu.Lock()
		for typeURL, t := range st.sent {
			if t.Nonce == "" {
				continue // requested, nothing sent yet
			}
			ci.Types[typeURL] = Status{Sent: t.Version, Acked: t.Acked, Rejected: t.Rejected, RejectReason: t.RejectReason, Resources: t.Count}
		}
		st.mu.Unlock()
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Proxy != out[j].Proxy {
			return out[i].Proxy < out[j].Proxy
		}
		return out[i].Stream < out[j].Stream
	})
	return out
}

// ConfigDump returns, as JSON, what the proxy's most recent stream was
// last sent, per type URL (the snapshot each last response was built
// from; SotW EDS and RDS responses carry the subset the proxy asked for,
// which is every one of them for Mizzen's proxy): {"proxy": id, "stream": n, "types": {url:
// {"version": v, "resources": [...]}}}, resources in protojson sorted by
// name. ok is false when the proxy is not connected.
func (s *Server) ConfigDump(proxyID string) (_ []byte, ok bool, _ error) {
	s.mu.Lock()
	var st *stream
	for _, c := range s.streams {
		if c.node != nil && c.node.id == proxyID && (st == nil || c.connected.After(st.connected)) {
			st = c
		}
	}
	s.mu.Unlock()
	if st == nil {
		return nil, false, nil
	}
	type typeDump struct {
		Version   string            `json:"version"`
		Resources []json.RawMessage `json:"resources"`
	}
	dump := struct {
		Proxy  string              `json:"proxy"`
		Stream int64               `json:"stream"`
		Delta  bool                `json:"delta,omitempty"`
		Types  map[string]typeDump `json:"types"`
	}{Proxy: proxyID, Stream: st.key.id, Delta: st.key.delta, Types: map[string]typeDump{}}
	st.mu.Lock()
	defer st.mu.Unlock()
	for typeURL, t := range st.sent {
		if t.Set == nil || t.Nonce == "" {
			continue
		}
		type named struct {
			name string
			js   json.RawMessage
		}
		items := make([]named, 0, len(t.Set.items))
		for _, m := range t.Set.items {
			js, err := protojson.Marshal(m)
			if err != nil {
				return nil, true, err
			}
			items = append(items, named{resourceName(m), js})
		}
		sort.Slice(items, func(i, j int) bool { return items[i].name < items[j].name })
		td := typeDump{Version: t.Version, Resources: make([]json.RawMessage, len(items))}
		for i, it := range items {
			td.Resources[i] = it.js
		}
		dump.Types[typeURL] = td
	}
	b, err := json.Marshal(dump)
	if err != nil {
		return nil, true, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, true, err
	}
	return out.Bytes(), true, nil
}

// DebugHandler serves /debug/config_dump?proxyID=<id> and
// /debug/connections.
func (s *Server) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("proxyID")
		if id == "" {
			http.Error(w, "proxyID is required", http.StatusBadRequest)
			return
		}
		b, ok, err := s.ConfigDump(id)
		switch {
		case !ok:
			http.Error(w, fmt.Sprintf("proxy %q is not connected", id), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		}
	})
	mux.HandleFunc("GET /debug/connections", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Connections())
	})
	return mux
}
