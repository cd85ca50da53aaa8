package e2e

import (
	"github.com/quiltmesh/quilt-runtime/internal/netns"

	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// pki is a certificate authority made for one test; nothing is committed.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key signed by the CA: a server
// certificate for 127.0.0.1, or a client certificate.
func (ca *pki) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// dialWith makes a client from inside the namespace with the given
// transport credentials.
func dialWith(t *testing.T, ns, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return netns.Dial(ctx, ns, a, 0) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// served reports whether a GetStatus call over conn is answered.
func served(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := quiltpb.NewQuiltAdminClient(conn).GetStatus(ctx, &quiltpb.GetStatusRequest{})
	return err
}

// TestTLS: with a certificate, plaintext clients are refused; with a CA,
// clients without a certificate or with one from another CA are refused
// and a good client is served; plaintext beyond loopback is refused at
// start unless --insecure.
func TestTLS(t *testing.T) {
	n := newNode(t)
	ca, other := newCA(t, "quilt test CA"), newCA(t, "another CA")
	dir := socketDir(t, frontendUID)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, frontendUID, frontendUID)
		return p
	}
	srvCert, srvKey := ca.issue(t, "quilt-runtime", true)
	cliCert, cliKey := ca.issue(t, "agent", false)
	badCert, badKey := other.issue(t, "intruder", false)
	certFile, keyFile, caFile := write("server.pem", srvCert), write("server-key.pem", srvKey), write("ca.pem", ca.pem)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	pair := func(c, k []byte) tls.Certificate {
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tlsClient := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12})
	}

	// TLS without client certificates.
	fe := n.startFrontend(t, "--tls-cert", certFile, "--tls-key", keyFile)
	if err := served(dialWith(t, n.ns, n.addr, insecure.NewCredentials())); err == nil {
		t.Error("a plaintext client was served by a TLS server")
	}
	if err := served(dialWith(t, n.ns, n.addr, tlsClient())); err != nil {
		t.Errorf("a TLS client was refused: %v", err)
	}
	stop(t, fe, syscall.SIGKILL)

	// mTLS.
	n.startFrontend(t, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":             insecure.NewCredentials(),
		"no client certificate": tlsClient(),
		"another CA's":          tlsClient(pair(badCert, badKey)),
	} {
		if err := served(dialWith(t, n.ns, n.addr, creds)); err == nil {
			t.Errorf("mTLS server served a client with %s", name)
		}
	}
	if err := served(dialWith(t, n.ns, n.addr, tlsClient(pair(cliCert, cliKey)))); err != nil {
		t.Errorf("mTLS server refused a good client: %v", err)
	}
	if !strings.Contains(n.frontend.Output(), "mtls=true") {
		t.Errorf("the frontend did not log mTLS")
	}

	// Plaintext beyond loopback: refused at start, unless --insecure.
	port := n.addr[strings.LastIndex(n.addr, ":"):]
	bin := filepath.Join(binDir, "quilt-runtime")
	common := []string{"--helper-socket", n.sock, "--state-dir", filepath.Join(dir, "state2")}
	for _, addr := range []string{"0.0.0.0" + port, "[::]" + port, "vsock://3" + port} {
		p := start(t, n.ns, unprivileged(frontendUID), bin, append([]string{"--grpc-addr", addr}, common...)...)
		if err := p.ExitStatus(t, 10*time.Second); err == nil || !strings.Contains(p.Output(), "refusing plaintext gRPC on "+addr) {
			t.Errorf("plaintext on %s: %v\n%s", addr, err, p.Output())
		}
	}
	stop(t, n.frontend, syscall.SIGKILL)
	p := start(t, n.ns, unprivileged(frontendUID), bin, append([]string{"--grpc-addr", "0.0.0.0" + port, "--insecure"}, common...)...)
	waitFor(t, p, func() bool { return strings.Contains(p.Output(), "Starting gRPC server on 0.0.0.0"+port) })
}
