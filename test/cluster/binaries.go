package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

const (
	// KubeVersion is the Kubernetes version hack/setup-kube.sh builds.
	KubeVersion = "v1.36.3"

	// EnvKubeBin names a directory holding the binaries (overrides the cache).
	EnvKubeBin = "MIZZEN_KUBE_BIN"
	// EnvCache is the cache root hack/setup-kube.sh builds into
	// (default ~/.cache/mizzen).
	EnvCache = "MIZZEN_CACHE"
	// EnvKwokStages names a directory of kwok stage files (overrides the
	// kwok-stages directory next to the binaries).
	EnvKwokStages = "MIZZEN_KWOK_STAGES"
	// EnvLog, when "1", sends the output of every cluster process to stderr.
	EnvLog = "MIZZEN_CLUSTER_LOG"

	setupScript = "hack/setup-kube.sh"
)

// Binaries lists the executables a cluster needs in its BinDir.
var Binaries = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"}

// MissingBinariesError reports that BinDir lacks some of the binaries.
type MissingBinariesError struct {
	Dir     string
	Missing []string
}

func (e *MissingBinariesError) Error() string {
	return fmt.Sprintf("Kubernetes test binaries missing in %s (%s): run %s to build them "+
		"(about 15 minutes the first time, then cached), or set %s to a directory that has them",
		e.Dir, strings.Join(e.Missing, ", "), setupScript, EnvKubeBin)
}

// CacheDir returns the cache root: $MIZZEN_CACHE, else ~/.cache/mizzen.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locating the cache directory (set %s): %w", EnvCache, err)
	}
	return filepath.Join(home, ".cache", "mizzen"), nil
}

// DefaultBinDir returns $MIZZEN_KUBE_BIN, else the directory
// hack/setup-kube.sh builds into ($MIZZEN_CACHE/kube-v1.36.3/bin).
func DefaultBinDir() (string, error) {
	if d := os.Getenv(EnvKubeBin); d != "" {
		return d, nil
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "kube-"+KubeVersion, "bin"), nil
}

// CheckBinDir returns a *MissingBinariesError if dir lacks any of Binaries.
func CheckBinDir(dir string) error {
	var missing []string
	for _, b := range Binaries {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return &MissingBinariesError{Dir: dir, Missing: missing}
	}
	return nil
}

// SetupBinaries runs hack/setup-kube.sh from the repository that contains
// the working directory (or this source file) and returns the binary
// directory it printed. The script is a no-op when its cache is up to date;
// otherwise it builds, which takes minutes. Its progress goes to progress.
func SetupBinaries(ctx context.Context, progress io.Writer) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	if progress == nil {
		progress = io.Discard
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, setupScript))
	cmd.Dir = root
	cmd.Stdout = &out
	cmd.Stderr = progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s failed: %w", setupScript, err)
	}
	var last string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			last = s
		}
	}
	if last == "" {
		return "", fmt.Errorf("%s printed no binary directory", setupScript)
	}
	return last, nil
}

// BuildTags are the build tags of the image's binaries, which
// hack/build-binaries.sh passes too: grpcnotrace leaves out gRPC's
// request tracing (golang.org/x/net/trace), whose html/template makes the
// linker keep every exported method of every type, about a third of the
// proxy's binary and so of its resident memory.
const BuildTags = "grpcnotrace"

// RepoRoot finds the repository root (the directory holding
// hack/setup-kube.sh), looking upwards from the working directory and then
// from this source file's directory.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if fi, err := os.Stat(filepath.Join(dir, setupScript)); err == nil && !fi.IsDir() {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("cannot find the repository root (a directory with " + setupScript + ")")
}

// kwokStageFiles returns the stage files kwok is started with:
// $MIZZEN_KWOK_STAGES, else <BinDir>/kwok-stages, else <BinDir>/../kwok-stages.
func kwokStageFiles(binDir string) ([]string, error) {
	dirs := []string{filepath.Join(binDir, "kwok-stages"), filepath.Join(filepath.Dir(binDir), "kwok-stages")}
	if d := os.Getenv(EnvKwokStages); d != "" {
		dirs = []string{d}
	}
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(d, "*.yaml"))
		if len(files) > 0 {
			sort.Strings(files)
			return files, nil
		}
	}
	return nil, fmt.Errorf("no kwok stage files (*.yaml) in %s: run %s to put them there, or set %s",
		strings.Join(dirs, " or "), setupScript, EnvKwokStages)
}
