package dataplane

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func upgradeSnap(t *testing.T, port uint32, app string) *snapshotT {
	snap := newSnap()
	snap.Clusters["app"] = staticCluster("app", app)
	snap.Routes["r"] = routeTo("r", "app")
	hc := rds("r")
	hc.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	snap.Listeners["l"] = realListener("l", port, &listener.FilterChain{Filters: []*listener.Filter{hcmNetFilter(t, hc, statsHTTPFilter(t, reporterInbound))}})
	return snap
}

// TestWebSocketUpgrade passes an Upgrade: websocket exchange through the
// connection manager to an app that switches protocols and echoes.
func TestWebSocketUpgrade(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "no upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo:"+line)
	}))
	port := freePort(t)
	d := newDP(t, Options{})
	if err := d.Apply(upgradeSnap(t, port, l.Addr().String())); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "frame\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo:frame\n" {
		t.Fatalf("after upgrade: %q %v", line, err)
	}
}

// TestH2CUpgrade sends an HTTP/1.1 request asking to upgrade to h2c and
// reads the answer as HTTP/2 on stream 1.
func TestH2CUpgrade(t *testing.T) {
	port := freePort(t)
	d := newDP(t, Options{})
	if err := d.Apply(upgradeSnap(t, port, backend(t, "app"))); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /up HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("upgrade answer %q", status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, br)
	fr.WriteSettings()
	var code string
	var body strings.Builder
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			code = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading h2 frames: %v (status %q body %q)", err, code, body.String())
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				dec.Write(f.HeaderBlockFragment())
			}
		case *http2.DataFrame:
			if f.StreamID == 1 {
				body.Write(f.Data())
				if f.StreamEnded() {
					if code != "200" || body.String() != "app /up" {
						t.Fatalf("h2c upgrade: %s %q", code, body.String())
					}
					return
				}
			}
		}
	}
}
