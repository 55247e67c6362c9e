package perf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"text/template"
	"time"
)

// peerCerts writes a CA, a server and a client key pair (ECDSA P-256, as the
// mesh uses) for the TLS hop between the two peers of a reference chain.
func peerCerts(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	for i, name := range []string{"server", "client"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", keyDER); err != nil {
			return err
		}
		// haproxy wants certificate and key in one file.
		crt, _ := os.ReadFile(filepath.Join(dir, name+".crt"))
		k, _ := os.ReadFile(filepath.Join(dir, name+".key"))
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), append(crt, k...), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// chainPorts are the loopback ports of a two-hop chain: the client talks
// plain HTTP to Front, Front talks TLS (mutual) to Back, Back talks plain
// HTTP to the echo server at Echo.
type chainPorts struct {
	Dir               string
	Front, Back, Echo int
}

var nginxConf = template.Must(template.New("nginx").Parse(`
# {{.Role}} hop of the reference chain; one worker, like one sidecar.
worker_processes 1;
daemon off;
pid {{.Dir}}/nginx-{{.Role}}.pid;
error_log {{.Dir}}/nginx-{{.Role}}.error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path {{.Dir}}/nginx-{{.Role}}-body;
  proxy_temp_path {{.Dir}}/nginx-{{.Role}}-proxy;
  fastcgi_temp_path {{.Dir}}/nginx-{{.Role}}-fastcgi;
  uwsgi_temp_path {{.Dir}}/nginx-{{.Role}}-uwsgi;
  scgi_temp_path {{.Dir}}/nginx-{{.Role}}-scgi;
  upstream next {
    server 127.0.0.1:{{.Next}};
    keepalive 16;
  }
  server {
{{- if eq .Role "front"}}
    listen 127.0.0.1:{{.Front}};
    location / {
      proxy_pass https://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate {{.Dir}}/client.crt;
      proxy_ssl_certificate_key {{.Dir}}/client.key;
      proxy_ssl_trusted_certificate {{.Dir}}/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }
{{- else}}
    listen 127.0.0.1:{{.Back}} ssl;
    ssl_certificate {{.Dir}}/server.crt;
    ssl_certificate_key {{.Dir}}/server.key;
    ssl_client_certificate {{.Dir}}/ca.pem;
    ssl_verify_client on;
    location / {
      proxy_pass http://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
{{- end}}
  }
}
`))

var haproxyConf = template.Must(template.New("haproxy").Parse(`
# {{.Role}} hop of the reference chain; one thread, like one sidecar.
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
{{- if eq .Role "front"}}
frontend in
  bind 127.0.0.1:{{.Front}}
  default_backend next
backend next
  server back 127.0.0.1:{{.Next}} ssl crt {{.Dir}}/client.pem ca-file {{.Dir}}/ca.pem verify required sni str(localhost)
{{- else}}
frontend in
  bind 127.0.0.1:{{.Back}} ssl crt {{.Dir}}/server.pem ca-file {{.Dir}}/ca.pem verify required
  default_backend next
backend next
  server echo 127.0.0.1:{{.Next}}
{{- end}}
`))

// peerConfig renders the configuration of one hop ("front" or "back").
func peerConfig(t *template.Template, p chainPorts, role string) ([]byte, error) {
	next := p.Back
	if role == "back" {
		next = p.Echo
	}
	var b bytes.Buffer
	err := t.Execute(&b, struct {
		chainPorts
		Role string
		Next int
	}{p, role, next})
	if err != nil {
		return nil, fmt.Errorf("rendering the %s config: %w", role, err)
	}
	return b.Bytes(), nil
}
