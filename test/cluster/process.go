package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// lockedWriter serialises writes from several processes to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) writeLine(prefix string, line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, prefix)
	_, _ = l.w.Write(line)
}

// logTail keeps the last bytes a process wrote and forwards them, line by
// line and prefixed with the process name, to a shared writer.
type logTail struct {
	name string
	out  *lockedWriter // nil: keep only the tail

	mu      sync.Mutex
	buf     []byte
	partial []byte
}

const logTailMax = 256 << 10

func newLogTail(name string, out *lockedWriter) *logTail {
	return &logTail{name: name, out: out}
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > logTailMax {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-logTailMax/2:]...)
	}
	if l.out != nil {
		l.partial = append(l.partial, p...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			l.out.writeLine("["+l.name+"] ", l.partial[:i+1])
			l.partial = l.partial[i+1:]
		}
		if len(l.partial) == 0 {
			l.partial = nil
		}
	}
	return len(p), nil
}

// Tail returns the last n lines written.
func (l *logTail) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimRight(string(l.buf), "\n")
	if s == "" {
		return "(no output)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// spawner starts child processes from one goroutine locked to its OS thread.
// On Linux a child's parent-death signal fires when the *thread* that forked
// it exits, and the Go runtime ends a thread when a goroutine that locked it
// returns without unlocking (netns code does this on purpose). A thread held
// by the spawner for the whole life of the cluster can never be ended that
// way, so the children only die with the process.
type spawner struct {
	reqs chan spawnReq
	quit chan struct{}
	once sync.Once
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), quit: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			select {
			case r := <-s.reqs:
				r.reply <- r.cmd.Start()
			case <-s.quit:
				return
			}
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, reply: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.reply
	case <-s.quit:
		return errors.New("cluster is stopping")
	}
}

// close releases the thread; call it only once every child is gone.
func (s *spawner) close() { s.once.Do(func() { close(s.quit) }) }

// process is one control-plane process the cluster runs itself.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    *logTail
	cancel context.CancelFunc

	done     chan struct{}
	err      error // valid once done is closed
	mu       sync.Mutex
	stopping bool
}

func startProcess(ctx context.Context, sp *spawner, name, path string, args, env []string, out *lockedWriter) (*process, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = childSysProcAttr()
	// Cancelling the context asks politely, and WaitDelay turns that into
	// SIGKILL if the process has not exited in time.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	if env != nil {
		cmd.Env = env
	}
	p := &process{name: name, cmd: cmd, log: newLogTail(name, out), cancel: cancel, done: make(chan struct{})}
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	if err := sp.start(cmd); err != nil {
		cancel()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		p.mu.Lock()
		stopping := p.stopping
		p.mu.Unlock()
		if !stopping && out != nil {
			out.writeLine("["+name+"] ", []byte(fmt.Sprintf("exited unexpectedly: %v\n", p.err)))
		}
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// exitError describes an early exit, with the end of the process's output.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited early (%v); last output:\n%s", p.name, p.err, p.log.Tail(40))
}

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits.
func (p *process) stop() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
}
