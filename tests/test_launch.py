"""Tests of dim.launch: starting processes, waiting until they listen, stopping them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from dim import launch
from dim.launch import DimProcess, EmbeddedDim, LaunchError, running

# A child that prints a line, optionally ignores SIGTERM, then after DELAY seconds listens
# on PORT (0: never) and sleeps; or exits at once with status 3 when DELAY is "exit".
CHILD = """
import signal, socket, sys, time
port, delay, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("child up", flush=True)
if delay == "exit":
    print("giving up", flush=True)
    sys.exit(3)
time.sleep(float(delay))
if port:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
while True:
    time.sleep(1)
"""


class LaunchCase(SynchronousTestCase):
    """Makes child processes in a fresh directory and kills whatever is left of them."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()

    def child(self, port: int = 0, delay: str = "0", mode: str = "plain",
              **options: object) -> DimProcess:
        """A DimProcess of CHILD (not started) writing to ``dir/NAME.out``."""
        name = str(options.pop("name", "child"))
        p = DimProcess(name, [sys.executable, "-c", CHILD, str(port), delay, mode],
                       output=self.dir / f"{name}.out", ports=[port] if port else [],
                       **options)  # type: ignore[arg-type]
        self.addCleanup(p.kill, signal.SIGKILL, 5)
        return p


class PortTests(SynchronousTestCase):
    """Free ports, open ports, and strports descriptions."""

    def test_free_ports_distinct_and_bindable(self) -> None:
        """free_ports gives distinct ports nothing listens on, each bindable."""
        ports = launch.free_ports(5)
        self.assertEqual(len(set(ports)), 5)
        for port in ports:
            self.assertFalse(launch.port_open(port))
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        self.assertIsInstance(launch.free_port(), int)

    def test_port_open(self) -> None:
        """port_open is true while something listens, false once it closed."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            self.assertTrue(launch.port_open(port))
        self.assertFalse(launch.port_open(port))

    def test_listen_and_argv(self) -> None:
        """The listen description and the twistd command line, with and without profiling."""
        self.assertEqual(launch.listen(8080), "tcp:8080:interface=127.0.0.1")
        self.assertEqual(launch.listen(1, backlog=4096), "tcp:1:interface=127.0.0.1:backlog=4096")
        argv = launch.twistd_argv("dim", ["--data", "d"], Path("/l/dim.log"))
        self.assertEqual(argv[0], sys.executable)
        self.assertEqual(argv[3:], ["-n", "--pidfile=", "--logfile", "/l/dim.log", "dim",
                                    "--data", "d"])
        profiled = launch.twistd_argv("dim", [], Path("x.log"), python="py", profile=Path("p"))
        self.assertEqual(profiled[0], "py")
        self.assertEqual(profiled[7:], ["--profile", "p", "--profiler", "cprofile",
                                        "--savestats", "dim"])


class ProcessTests(LaunchCase):
    """A child started, ready, read and stopped."""

    def test_launch_and_stop(self) -> None:
        """launch() returns once the port listens; the pid, the output and a clean stop with
        SIGTERM are reported."""
        port = launch.free_port()
        p = self.child(port, delay="0.3")
        self.assertIsNone(p.pid)
        self.assertFalse(p.alive)
        self.assertIs(p.launch(timeout=20), p)
        self.assertTrue(launch.port_open(port))
        self.assertTrue(p.alive)
        self.assertTrue(os.path.exists(f"/proc/{p.pid}"))
        self.assertIsNone(p.returncode)
        self.assertIn("child up", p.log_tail())
        self.assertEqual(p.stop(), -signal.SIGTERM)
        self.assertFalse(p.alive)
        self.assertEqual(p.returncode, -signal.SIGTERM)
        self.assertIn(f"pid={p.pid}", repr(p))

    def test_exit_before_listening(self) -> None:
        """A child that exits before it listens fails the wait at once, with its status and
        the end of its output."""
        p = self.child(launch.free_port(), delay="exit").start()
        began = time.monotonic()
        with self.assertRaises(LaunchError) as caught:
            p.wait_ready(timeout=30)
        self.assertLess(time.monotonic() - began, 10)
        message = str(caught.exception)
        self.assertIn("child exited (3)", message)
        self.assertIn("giving up", message)

    def test_nothing_listens(self) -> None:
        """A child that never listens fails the wait after the timeout."""
        port = launch.free_port()
        p = self.child(delay="0", name="mute").start()
        began = time.monotonic()
        with self.assertRaises(LaunchError) as caught:
            launch.wait_for_port(port, timeout=0.5, process=p)
        self.assertGreaterEqual(time.monotonic() - began, 0.5)
        self.assertIn(f"nothing listens on 127.0.0.1:{port} after 0.5 s", str(caught.exception))
        self.assertIn("child up", str(caught.exception))
        self.assertTrue(p.alive)

    def test_sigkill_after_timeout(self) -> None:
        """A child that ignores SIGTERM is killed with SIGKILL once the timeout passed."""
        p = self.child(launch.free_port(), mode="stubborn")
        p.launch(timeout=20)
        began = time.monotonic()
        self.assertEqual(p.stop(timeout=0.5), -signal.SIGKILL)
        self.assertGreaterEqual(time.monotonic() - began, 0.5)
        self.assertFalse(p.alive)

    def test_kill_and_signals(self) -> None:
        """kill() sends SIGKILL by default; send() does nothing once the child is gone."""
        p = self.child().start()
        self.assertEqual(p.kill(), -signal.SIGKILL)
        p.send(signal.SIGTERM)
        self.assertEqual(p.returncode, -signal.SIGKILL)

    def test_env_and_detach(self) -> None:
        """``env`` adds to the environment; a detached child leads a session of its own."""
        p = DimProcess("env", [sys.executable, "-c",
                               "import os, time; print(os.environ['DIM_LAUNCH_TEST'], "
                               "os.environ.get('PATH') is not None, flush=True); time.sleep(60)"],
                       output=self.dir / "env.out", env={"DIM_LAUNCH_TEST": "here"},
                       detach=True).start()
        self.addCleanup(p.kill)
        deadline = time.monotonic() + 10
        while "here" not in p.log_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(p.log_tail(), "here True")
        self.assertEqual(os.getsid(p.pid), p.pid)
        self.assertNotEqual(os.getsid(p.pid), os.getsid(0))


class PidFileTests(LaunchCase):
    """A process found again through its pid file, as a later run of a script finds it."""

    def test_found_again_and_stopped(self) -> None:
        """A second DimProcess of the same pid file and log finds the running process, stops
        it, and removes the pid file."""
        log, pidfile = self.dir / "logs" / "a.log", self.dir / "run" / "a.pid"
        argv = [sys.executable, "-c", CHILD, "0", "0", "plain", str(log)]
        first = DimProcess("a", argv, log=log, pidfile=pidfile).start()
        self.addCleanup(first.kill)
        self.assertEqual(pidfile.read_text(), f"{first.pid}\n")
        later = DimProcess("a", argv, log=log, pidfile=pidfile)
        # Just after exec the kernel may show an empty command line for a moment.
        deadline = time.monotonic() + 10
        while later.recorded_pid() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(later.recorded_pid(), first.pid)
        self.assertEqual(later.pid, first.pid)
        self.assertTrue(later.alive)
        self.assertIsNone(later.stop(timeout=10))
        self.assertFalse(first.alive)
        self.assertFalse(later.alive)
        self.assertFalse(pidfile.exists())

    def test_pid_of_another_program_ignored(self) -> None:
        """A pid file naming a process whose command line does not name the log, or no
        process, or garbage, is not ours."""
        pidfile = self.dir / "x.pid"
        pidfile.parent.mkdir(parents=True)
        p = DimProcess("x", ["true"], log=self.dir / "x.log", pidfile=pidfile)
        for text in (f"{os.getpid()}\n", "999999999\n", "garbage"):
            pidfile.write_text(text)
            self.assertIsNone(p.recorded_pid(), text)
            self.assertFalse(p.alive)
        self.assertIsNone(DimProcess("y", ["true"]).recorded_pid())


class StopAllTests(LaunchCase):
    """Several processes stopped at once."""

    def test_stop_all(self) -> None:
        """Every running process gets SIGTERM in order; the one ignoring it gets SIGKILL
        after the shared timeout; processes already gone are left out."""
        plain = self.child(name="plain").start()
        stubborn = self.child(launch.free_port(), mode="stubborn", name="stubborn")
        stubborn.launch(timeout=20)
        gone = self.child(name="gone").start()
        gone.kill()
        heard: list[tuple[str, str]] = []
        began = time.monotonic()
        launch.stop_all([stubborn, gone, plain], timeout=1.0,
                        say=lambda p, what: heard.append((p.name, what)))
        self.assertLess(time.monotonic() - began, 10)
        self.assertEqual(heard, [("stubborn", "SIGTERM"), ("plain", "SIGTERM"),
                                 ("stubborn", "SIGKILL")])
        self.assertEqual(plain.returncode, -signal.SIGTERM)
        self.assertEqual(stubborn.returncode, -signal.SIGKILL)


class EmbeddedDimTests(SynchronousTestCase):
    """A real ``twistd -n dim``: started, listed by its own gateway, stopped cleanly."""

    def test_embedded_dim(self) -> None:
        """The embedded dim listens on both ports, lists its node, and stops on SIGTERM with
        twistd's clean shutdown in its log."""
        workdir = Path(self.mktemp()).resolve()
        dim = EmbeddedDim(workdir, heartbeat=5, extra=["--node-id", "solo"],
                          env={"DIM_SECRET": "launch-test-secret-of-at-least-32-bytes"})
        self.addCleanup(dim.process.kill)
        self.assertEqual(dim.process.argv[-2:], ["--node-id", "solo"])
        self.assertIn("5", dim.process.argv)
        self.assertIs(dim.start(), dim)
        self.assertTrue(launch.port_open(dim.http_port))
        self.assertTrue(launch.port_open(dim.node_port))
        launch.wait_listed(dim.base, ["solo"], timeout=20, processes=[dim.process])
        self.assertEqual([n["id"] for n in launch.listed_nodes(dim.base)], ["solo"])
        with self.assertRaises(LaunchError) as caught:
            launch.wait_listed(dim.base, ["solo", "other"], timeout=0.3,
                               processes=[dim.process])
        self.assertIn("the gateway lists ['solo'], not ['other', 'solo']", str(caught.exception))
        self.assertIn("--- dim", str(caught.exception))
        self.assertEqual(dim.stop(), -signal.SIGTERM)
        self.assertIn("Server Shut Down.", dim.process.log_tail(5))
        self.assertTrue((workdir / "dim.log").exists())
        self.assertEqual(launch.listed_nodes(dim.base), [])


class ClusterLayoutTests(SynchronousTestCase):
    """The processes of a cluster as laid out, before any starts (the cluster tests start
    them on real services)."""

    def test_layout(self) -> None:
        """One gateway and a node per id, on the given or free ports, each with the cluster
        name, its own log and the options made for it."""
        logs = Path("/tmp/logs")
        cluster = launch.Cluster(
            logs, "c1", ["a", "b"], node_ports=[7001, 7002], gateway_args=["--routing", "x"],
            node_args=["--heartbeat", "2"], env={"K": "v"}, backlog=64,
            options=lambda name: {"output": logs / f"{name}.out"})
        self.assertEqual([p.name for p in cluster.processes()], ["gateway", "a", "b"])
        self.assertEqual(cluster.ports, {"a": 7001, "b": 7002})
        self.assertFalse(launch.port_open(cluster.http_port))
        self.assertEqual(cluster.base, f"http://127.0.0.1:{cluster.http_port}")
        gw, a = cluster.gateway, cluster.nodes["a"]
        self.assertEqual(gw.ports, [cluster.http_port])
        self.assertEqual(a.ports, [7001])
        self.assertEqual(gw.argv[-7:], ["dim-gateway", "--listen",
                                        f"tcp:{cluster.http_port}:interface=127.0.0.1:backlog=64",
                                        "--cluster", "c1", "--routing", "x"])
        self.assertEqual(a.argv[-9:], ["dim-node", "--id", "a", "--listen",
                                       "tcp:7001:interface=127.0.0.1:backlog=64",
                                       "--cluster", "c1", "--heartbeat", "2"])
        self.assertEqual((a.log, a.output), (logs / "a.log", logs / "a.out"))
        self.assertEqual(gw.log, logs / "gateway.log")
        self.assertEqual(a.env["K"], "v")
        cluster.stop()  # nothing runs: nothing to do

    def test_ports_must_match_ids(self) -> None:
        """As many node ports as ids, or none."""
        with self.assertRaises(ValueError):
            launch.Cluster(Path("/tmp"), "c", ["a", "b"], node_ports=[1])
        free = launch.Cluster(Path("/tmp"), "c", ["a", "b"], gateway_port=8000)
        self.assertEqual(free.http_port, 8000)
        self.assertEqual(len(set(free.ports.values())), 2)


class RunningTests(SynchronousTestCase):
    """``running`` tells a process that has finished exiting from one that runs."""

    def test_running_zombie_and_gone(self) -> None:
        """This process runs; a child that exited but is not reaped yet (a zombie) does not,
        nor does a pid that names no process once it is reaped."""
        self.assertTrue(running(os.getpid()))
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        deadline = time.monotonic() + 10
        while running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(running(child.pid))
        self.assertTrue(Path(f"/proc/{child.pid}").exists())  # a zombie, not reaped yet
        child.wait()
        self.assertFalse(running(child.pid))
