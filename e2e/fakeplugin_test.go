package e2e

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// The test binary doubles as a minimal network driver plugin, so the
// harness's plugin handling (start, readiness, pid, restart, discovery by
// dockerd through the bound plugins folder) is tested without vxbridge.
// testbed.StartPlugin runs it as `BIN serve --socket S --state-dir D --netns-dir N`.
const fakePluginEnv = "VXT_FAKE_PLUGIN"

func isFakePlugin() bool {
	return os.Getenv(fakePluginEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "serve"
}

func serveFakePlugin() {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	socket := fs.String("socket", "", "unix socket to listen on")
	fs.String("state-dir", "", "ignored")
	fs.String("netns-dir", "", "ignored")
	_ = fs.Parse(os.Args[2:])
	_ = os.Remove(*socket) // a stale socket from a killed predecessor
	l, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		l.Close() // also removes the socket file
		os.Exit(0)
	}()
	log.Printf("fake plugin pid %d listening on %s", os.Getpid(), *socket)
	_ = http.Serve(l, http.HandlerFunc(fakePluginHandler))
}

func fakePluginHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	log.Printf("%s %s", r.URL.Path, body)
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	switch {
	case r.URL.Path == "/Plugin.Activate":
		fmt.Fprint(w, `{"Implements":["NetworkDriver"]}`)
	case r.URL.Path == "/NetworkDriver.GetCapabilities":
		fmt.Fprint(w, `{"Scope":"local","ConnectivityScope":"local"}`)
	case strings.HasPrefix(r.URL.Path, "/NetworkDriver.CreateNetwork"),
		strings.HasPrefix(r.URL.Path, "/NetworkDriver.DeleteNetwork"):
		fmt.Fprint(w, `{}`)
	default:
		http.NotFound(w, r)
	}
}
