//! The instrument the ratio benchmarks share, so that a ratio gives the
//! same answer twice.
//!
//! - **Processes of their own.** Each client and each server runs in a
//!   process of its own (this benchmark's binary again, in the role named
//!   by `SINEW_BENCH_ROLE`), clients pinned to the first core and servers
//!   to the second (with `taskset`, where there are two cores;
//!   `SINEW_BENCH_PIN=0` leaves them unpinned), so that a pair does not
//!   fight itself for the cores, and what each process spent is its own.
//!   They run without address-space randomization (`setarch -R`), and are
//!   replaced by new ones several times in a run (generations), so that
//!   where one process's memory happened to fall does not set the answer.
//! - **Many short rounds.** Rounds of 100ms, in cycles: in each cycle each
//!   subject runs between two rounds of its base (tonic, sinew, tonic,
//!   sinew traced, tonic, ...), and the subject's ratio for that cycle is
//!   taken against the mean of the two, so that the host's drift cancels
//!   out. A ratio is the median over the cycles, with a 95% confidence
//!   interval by bootstrap over them.
//! - **What the CPU did.** Per call, from `/proc`: time on CPU of the
//!   client and the server (every thread, from `schedstat`, in
//!   nanoseconds), the share of it in user mode, voluntary and involuntary
//!   context switches, and read-like and write-like system calls; and, in
//!   a short pass of its own with `perf` attached (where `perf` can count
//!   tracepoints), `futex`, `writev`, `epoll_wait` and other system calls.
//! - **A loaded host.** Burner processes, one pinned to each core, each
//!   busy for a set share of every 10ms (`SINEW_BENCH_LOAD`, default
//!   0.5), while the same pairs take their turns again.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::print_stdout,
    reason = "each benchmark uses what it needs of this module, and reports on stdout"
)]

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

/// The environment variable that names a child's role.
pub const ROLE: &str = "SINEW_BENCH_ROLE";

/// The role this process was started in, if it is an instrument's child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Whether `program --version` runs here.
fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The core a client process is pinned to, and the core a server process
/// is pinned to, where the host has two cores or more and `taskset`.
pub fn cores() -> Option<(usize, usize)> {
    if std::env::var("SINEW_BENCH_PIN").is_ok_and(|v| v == "0") {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores >= 2 && has("taskset")).then_some((0, 1))
}

/// One thread's counters.
#[derive(Debug, Clone, Copy, Default)]
struct Thread {
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

/// A process's counters at one moment, from `/proc`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    threads: HashMap<String, Thread>,
    user_ticks: u64,
    system_ticks: u64,
    reads: u64,
    writes: u64,
}

/// The value after `key` in a `key: value` file such as `status` or `io`.
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Snapshot {
    /// Reads the counters of process `pid`: empty where `/proc` is not
    /// there (not Linux).
    pub fn take(pid: u32) -> Self {
        let base = format!("/proc/{pid}");
        let mut snapshot = Self::default();
        if let Ok(tasks) = std::fs::read_dir(format!("{base}/task")) {
            for task in tasks.flatten() {
                let read = |file: &str| std::fs::read_to_string(task.path().join(file));
                let cpu_ns = read("schedstat")
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                let status = read("status").unwrap_or_default();
                snapshot.threads.insert(
                    task.file_name().to_string_lossy().into_owned(),
                    Thread {
                        cpu_ns,
                        voluntary: field(&status, "voluntary_ctxt_switches"),
                        involuntary: field(&status, "nonvoluntary_ctxt_switches"),
                    },
                );
            }
        }
        // utime and stime, the 14th and 15th fields of `stat`, counted from
        // after the command name (which may hold spaces): in ticks of 10ms,
        // every thread's, those that ended included.
        if let Ok(stat) = std::fs::read_to_string(format!("{base}/stat"))
            && let Some(close) = stat.rfind(')')
        {
            let mut fields = stat[close + 1..].split_whitespace().skip(11);
            snapshot.user_ticks = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            snapshot.system_ticks = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
        let io = std::fs::read_to_string(format!("{base}/io")).unwrap_or_default();
        snapshot.reads = field(&io, "syscr");
        snapshot.writes = field(&io, "syscw");
        snapshot
    }

    /// What the process did from this snapshot to `later`: each thread's
    /// counters since then (all of them for a thread started since; a
    /// thread that ended meanwhile takes its share with it).
    pub fn until(&self, later: &Self) -> Usage {
        let mut usage = Usage {
            user_ticks: later.user_ticks.saturating_sub(self.user_ticks),
            system_ticks: later.system_ticks.saturating_sub(self.system_ticks),
            reads: later.reads.saturating_sub(self.reads),
            writes: later.writes.saturating_sub(self.writes),
            ..Usage::default()
        };
        for (tid, now) in &later.threads {
            let before = self.threads.get(tid).copied().unwrap_or_default();
            usage.cpu_ns += now.cpu_ns.saturating_sub(before.cpu_ns);
            usage.voluntary += now.voluntary.saturating_sub(before.voluntary);
            usage.involuntary += now.involuntary.saturating_sub(before.involuntary);
        }
        usage
    }
}

/// What a process did over some time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Time on a CPU, all threads, in nanoseconds.
    pub cpu_ns: u64,
    /// Voluntary context switches (the thread waited).
    pub voluntary: u64,
    /// Involuntary context switches (the thread was preempted).
    pub involuntary: u64,
    /// Read-like system calls (`syscr`).
    pub reads: u64,
    /// Write-like system calls (`syscw`).
    pub writes: u64,
    /// User time, in ticks of 10ms.
    pub user_ticks: u64,
    /// System time, in ticks of 10ms.
    pub system_ticks: u64,
}

impl Usage {
    fn add(&mut self, other: &Self) {
        self.cpu_ns += other.cpu_ns;
        self.voluntary += other.voluntary;
        self.involuntary += other.involuntary;
        self.reads += other.reads;
        self.writes += other.writes;
        self.user_ticks += other.user_ticks;
        self.system_ticks += other.system_ticks;
    }
}

/// A child process in a role: it reads commands from its standard input,
/// one per line, and answers on its standard output; it ends when its
/// standard input closes, and is killed when this is dropped.
pub struct Proc {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts this binary again in `role`, pinned to `core` if given, with
    /// `env` set.
    pub fn spawn(name: &str, role: &str, core: Option<usize>, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("this benchmark's path");
        // Without address-space randomization (`setarch -R`, where there
        // is one): a process's layout sets how its code and data fall on
        // cache lines and sets, and so a few percent of its cost, the
        // same way in every run instead of differently in each.
        let mut program = vec![exe.into_os_string()];
        if has("setarch") {
            program.splice(0..0, ["setarch".into(), "-R".into()]);
        }
        if let Some(core) = core {
            program.splice(
                0..0,
                ["taskset".into(), "-c".into(), core.to_string().into()],
            );
        }
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        command
            .env(ROLE, role)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
        }
    }

    /// The process id (`taskset` and `setarch` exec the program, keeping
    /// it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("{} is gone: {e}", self.name));
    }

    /// The next line of its answer.
    pub fn recv(&mut self) -> String {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("read from {}: {e}", self.name));
        assert!(read > 0, "{} ended", self.name);
        line.trim_end().to_owned()
    }

    /// Its counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child: the commands from the parent, until its standard input
/// closes.
pub fn commands() -> impl Iterator<Item = String> {
    std::io::stdin().lines().map_while(Result::ok)
}

/// In a child: answers the parent.
pub fn reply(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// In a client child: answers a `round` command with what the round did.
pub fn reply_round(round: &super::Round) {
    reply(&format!(
        "done {} {} {} {}",
        round.calls, round.p50_us, round.p99_us, round.rps
    ));
}

/// The `round <millis>` command's duration.
pub fn round_command(line: &str) -> Option<Duration> {
    let millis = line.strip_prefix("round ")?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// A client and the server it calls, measured together.
pub struct Pair {
    /// What the reports call it.
    pub name: String,
    /// The client process.
    pub client: Proc,
    /// The server process.
    pub server: Proc,
}

impl Pair {
    /// Starts `server_role` on the server core, waits for its `addr` line,
    /// and starts `client_role` on the client core, calling that address
    /// (`SINEW_BENCH_ADDR`), with `env` set in both; the client answers
    /// `ready` once connected.
    pub fn start(name: &str, server_role: &str, client_role: &str, env: &[(&str, String)]) -> Self {
        let cores = cores();
        let mut server = Proc::spawn(
            &format!("{name} server"),
            server_role,
            cores.map(|c| c.1),
            env,
        );
        let addr = server.recv();
        let addr = addr.strip_prefix("addr ").expect("the server's address");
        let mut env = env.to_vec();
        env.push(("SINEW_BENCH_ADDR", addr.to_owned()));
        let mut client = Proc::spawn(
            &format!("{name} client"),
            client_role,
            cores.map(|c| c.0),
            &env,
        );
        assert_eq!(client.recv(), "ready", "{name} client");
        Self {
            name: name.to_owned(),
            client,
            server,
        }
    }

    /// One round of `length`, and what it cost.
    pub fn round(&mut self, length: Duration) -> Measured {
        let (client, server) = (self.client.snapshot(), self.server.snapshot());
        self.client.send(&format!("round {}", length.as_millis()));
        let answer = self.client.recv();
        let (client_after, server_after) = (self.client.snapshot(), self.server.snapshot());
        let mut fields = answer
            .strip_prefix("done ")
            .unwrap_or_else(|| panic!("{}: {answer}", self.name))
            .split(' ');
        let mut next = || fields.next().expect("a field of the round's answer");
        let calls: u64 = next().parse().expect("calls");
        let p50_us: u64 = next().parse().expect("p50");
        let p99_us: u64 = next().parse().expect("p99");
        let rps: f64 = next().parse().expect("rps");
        Measured {
            calls,
            rps,
            p50_us,
            p99_us,
            client: client.until(&client_after),
            server: server.until(&server_after),
        }
    }
}

/// One pair's round.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Calls made.
    pub calls: u64,
    /// Calls a second.
    pub rps: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// What the client process did.
    pub client: Usage,
    /// What the server process did.
    pub server: Usage,
}

impl Measured {
    /// Client and server CPU time per call, in microseconds.
    pub fn cpu_us(&self) -> f64 {
        (self.client.cpu_ns + self.server.cpu_ns) as f64 / 1e3 / self.calls.max(1) as f64
    }
}

/// How many cycles and how long a round: `SINEW_BENCH_ROUNDS` (default
/// 150) cycles of rounds of `SINEW_BENCH_ROUND_MS` (default 100).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Cycles: rounds per subject.
    pub rounds: usize,
    /// Length of a round.
    pub length: Duration,
}

impl Plan {
    /// The plan from the environment.
    pub fn from_env() -> Self {
        Self {
            rounds: super::env_number("SINEW_BENCH_ROUNDS", 150).max(2) as usize,
            length: Duration::from_millis(super::env_number("SINEW_BENCH_ROUND_MS", 100)),
        }
    }
}

/// Every pair's rounds, in order.
pub type Rounds = Vec<Vec<Measured>>;

/// Runs `plan.rounds` cycles of `groups` ([`take_turns`]) over
/// `SINEW_BENCH_GENERATIONS` (default 5) generations of processes, each
/// started by `start` for its share of the cycles and stopped after it:
/// what one process or one connection happens to cost (where its memory
/// fell, how its socket buffers grew) is averaged over several. Returns
/// the rounds, and the last generation's pairs.
pub fn generations(
    start: impl Fn() -> Vec<Pair>,
    groups: &[Group],
    plan: Plan,
) -> (Rounds, Vec<Pair>) {
    let generations =
        (super::env_number("SINEW_BENCH_GENERATIONS", 5) as usize).clamp(1, plan.rounds);
    let mut rounds: Rounds = Vec::new();
    let mut pairs = Vec::new();
    for g in 0..generations {
        let share = plan.rounds / generations + usize::from(g < plan.rounds % generations);
        pairs = start();
        let these = take_turns(
            &mut pairs,
            groups,
            Plan {
                rounds: share,
                ..plan
            },
        );
        rounds.resize(these.len(), Vec::new());
        for (all, these) in rounds.iter_mut().zip(these) {
            all.extend(these);
        }
    }
    (rounds, pairs)
}

/// A base pair and the pairs measured against it: each round of a subject
/// is run between two rounds of the base, so that a ratio is taken
/// against the base's rounds just before and just after it, and the
/// host's drift over those rounds cancels out.
pub struct Group {
    /// The base pair's index.
    pub base: usize,
    /// The subjects' indexes.
    pub subjects: Vec<usize>,
}

/// Runs `plan.rounds` cycles, after one warm-up round of each pair; in
/// each cycle each group runs as base, subject, base, subject, ..., base.
pub fn take_turns(pairs: &mut [Pair], groups: &[Group], plan: Plan) -> Rounds {
    for pair in pairs.iter_mut() {
        pair.round(plan.length);
    }
    let verbose = std::env::var_os("SINEW_BENCH_VERBOSE").is_some();
    let mut rounds: Rounds = vec![Vec::new(); pairs.len()];
    let mut run = |at: usize, i: usize, rounds: &mut Rounds| {
        let measured = pairs[at].round(plan.length);
        if verbose {
            println!(
                "round {i} {}: {:.0} rps, cpu {:.2}us/call (client {:.2}, server {:.2})",
                pairs[at].name,
                measured.rps,
                measured.cpu_us(),
                measured.client.cpu_ns as f64 / 1e3 / measured.calls.max(1) as f64,
                measured.server.cpu_ns as f64 / 1e3 / measured.calls.max(1) as f64,
            );
        }
        rounds[at].push(measured);
    };
    for i in 0..plan.rounds {
        for group in groups {
            run(group.base, i, &mut rounds);
            for &subject in &group.subjects {
                run(subject, i, &mut rounds);
                run(group.base, i, &mut rounds);
            }
        }
    }
    rounds
}

/// The `j`th subject of `group` against its base, cycle by cycle: by CPU
/// time per call (the base's over the subject's, so that higher is
/// better) and by calls a second, the base's being the mean of its rounds
/// just before and just after the subject's.
pub fn compare(rounds: &Rounds, group: &Group, j: usize) -> (Ratio, Ratio) {
    let base = &rounds[group.base];
    let stride = group.subjects.len() + 1;
    let (mut by_cpu, mut by_rps) = (Vec::new(), Vec::new());
    for (i, subject) in rounds[group.subjects[j]].iter().enumerate() {
        let (before, after) = (&base[i * stride + j], &base[i * stride + j + 1]);
        by_cpu.push((before.cpu_us() + after.cpu_us()) / 2.0 / subject.cpu_us());
        by_rps.push(subject.rps / ((before.rps + after.rps) / 2.0));
    }
    (Ratio::of(&by_cpu), Ratio::of(&by_rps))
}

/// The median of `values`.
pub fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A ratio: the median of the per-round ratios, and its 95% confidence
/// interval by bootstrap (2000 resamples of the round pairs, seeded, so
/// that the same rounds give the same interval).
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    /// The median.
    pub median: f64,
    /// The interval's low end.
    pub low: f64,
    /// The interval's high end.
    pub high: f64,
}

impl Ratio {
    /// From the per-round ratios.
    pub fn of(ratios: &[f64]) -> Self {
        let mut sorted = ratios.to_vec();
        let median = median_of(&mut sorted);
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut medians: Vec<f64> = (0..2000)
            .map(|_| {
                let mut sample: Vec<f64> = (0..ratios.len())
                    .map(|_| ratios[rng.usize(..ratios.len())])
                    .collect();
                median_of(&mut sample)
            })
            .collect();
        medians.sort_by(f64::total_cmp);
        Self {
            median,
            low: medians[medians.len() * 25 / 1000],
            high: medians[medians.len() * 975 / 1000 - 1],
        }
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} [{:.3}, {:.3}]", self.median, self.low, self.high)
    }
}

/// One line on a pair's rounds: median calls a second, latency, and per
/// call what the CPU did.
pub fn describe(name: &str, rounds: &[Measured]) -> String {
    let mut rps: Vec<f64> = rounds.iter().map(|r| r.rps).collect();
    let mut cpu: Vec<f64> = rounds.iter().map(Measured::cpu_us).collect();
    let mut p99: Vec<f64> = rounds.iter().map(|r| r.p99_us as f64).collect();
    let (mut client, mut server) = (Usage::default(), Usage::default());
    let mut calls = 0;
    for r in rounds {
        client.add(&r.client);
        server.add(&r.server);
        calls += r.calls;
    }
    let per_call = |n: u64| n as f64 / calls.max(1) as f64;
    let user_share =
        |u: &Usage| 100.0 * u.user_ticks as f64 / (u.user_ticks + u.system_ticks).max(1) as f64;
    let mut line = format!(
        "{name}: {:.0} rps, p99 {:.0}us; per call: cpu {:.2}us (client {:.2}us, {:.0}% user; server {:.2}us, {:.0}% user)",
        median_of(&mut rps),
        median_of(&mut p99),
        median_of(&mut cpu),
        per_call(client.cpu_ns) / 1e3,
        user_share(&client),
        per_call(server.cpu_ns) / 1e3,
        user_share(&server),
    );
    for (side, u) in [("client", &client), ("server", &server)] {
        let _ = write!(
            line,
            "; {side} switches {:.3} voluntary, {:.3} involuntary, syscalls {:.2} read-like, {:.2} write-like",
            per_call(u.voluntary),
            per_call(u.involuntary),
            per_call(u.reads),
            per_call(u.writes),
        );
    }
    line
}

/// Burner processes, one pinned to each core, each busy for `load` of
/// every 10ms; they stop when this is dropped (or when the benchmark
/// ends: their standard input closes).
pub struct Load(Vec<Proc>);

impl Load {
    /// The share of each core to keep busy: `SINEW_BENCH_LOAD`, default 0.5.
    pub fn share() -> f64 {
        std::env::var("SINEW_BENCH_LOAD")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.5, |v| v.clamp(0.0, 1.0))
    }

    /// Starts the burners.
    pub fn start(share: f64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let pinned = self::cores().is_some();
        Self(
            (0..cores)
                .map(|core| {
                    let mut burner = Proc::spawn(
                        &format!("burner {core}"),
                        "burn",
                        pinned.then_some(core),
                        &[("SINEW_BENCH_LOAD", share.to_string())],
                    );
                    assert_eq!(burner.recv(), "burning");
                    burner
                })
                .collect(),
        )
    }
}

/// In the `burn` role: keeps this core busy for `SINEW_BENCH_LOAD` of
/// every 10ms until standard input closes.
pub fn burn() {
    let share = Load::share();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    std::thread::spawn(move || {
        for _ in commands() {}
        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    reply("burning");
    let period = Duration::from_millis(10);
    let busy = period.mul_f64(share);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let start = Instant::now();
        let mut spins = 0_u64;
        while start.elapsed() < busy {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "a burner's own thread, with no runtime on it"
        )]
        std::thread::sleep(period.saturating_sub(start.elapsed()));
    }
}

/// System calls counted by `perf` (tracepoints on entry).
pub const SYSCALLS: [&str; 8] = [
    "futex",
    "epoll_wait",
    "writev",
    "write",
    "sendto",
    "recvfrom",
    "read",
    "sched_yield",
];

/// `perf stat` counting [`SYSCALLS`] of some processes, one `perf` each,
/// each with its folder (its output, and the two FIFOs it is controlled
/// through).
pub struct SyscallCount {
    perfs: Vec<(Child, tempfile::TempDir)>,
}

/// How long a `perf` may take to attach and say it counts.
const PERF_ATTACH: Duration = Duration::from_secs(10);

impl SyscallCount {
    /// Starts counting for each of `pids`; `None` where `perf` cannot
    /// count tracepoints here (not installed, or not allowed), or did not
    /// say within [`PERF_ATTACH`] that it counts.
    pub fn start(pids: &[u32]) -> Option<Self> {
        let events: Vec<String> = SYSCALLS
            .iter()
            .map(|s| format!("syscalls:sys_enter_{s}"))
            .collect();
        let events = events.join(",");
        let probe = Command::new("perf")
            .args(["stat", "-x,", "-e", &events, "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            return None;
        }
        let mut perfs = Vec::new();
        for pid in pids {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let (ctl, ack) = (dir.path().join("ctl"), dir.path().join("ack"));
            let made = Command::new("mkfifo").arg(&ctl).arg(&ack).status();
            if !made.is_ok_and(|s| s.success()) {
                return None;
            }
            // Attached with its counters off (`-D -1`), and turned on
            // through the control FIFO once attached, which it answers
            // with `ack`: counting has begun when that arrives.
            let mut control = std::ffi::OsString::from("fifo:");
            control.push(&ctl);
            control.push(",");
            control.push(&ack);
            let child = Command::new("perf")
                .args([
                    "stat",
                    "-x,",
                    "-e",
                    &events,
                    "-D",
                    "-1",
                    "-p",
                    &pid.to_string(),
                ])
                .arg("--control")
                .arg(control)
                .arg("-o")
                .arg(dir.path().join("out"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf stat");
            perfs.push((child, dir));
            let (done, answer) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let enabled = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&ctl)
                    .and_then(|mut ctl| ctl.write_all(b"enable\n"))
                    .and_then(|()| {
                        let mut line = String::new();
                        BufReader::new(std::fs::File::open(&ack)?).read_line(&mut line)?;
                        Ok(line.trim() == "ack")
                    });
                let _ = done.send(enabled.unwrap_or(false));
            });
            if answer.recv_timeout(PERF_ATTACH) != Ok(true) {
                // The thread, if still waiting on a FIFO, is let go: the
                // FIFOs go with the folder, and perf with this.
                for (mut child, _) in perfs {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return None;
            }
        }
        Some(Self { perfs })
    }

    /// Stops counting: for each process, the count of each system call.
    pub fn stop(self) -> Vec<HashMap<String, u64>> {
        self.perfs
            .into_iter()
            .map(|(mut child, dir)| {
                let _ = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
                let _ = child.wait();
                let text = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
                text.lines()
                    .filter_map(|line| {
                        let mut fields = line.split(',');
                        let count = fields.next()?.parse().ok()?;
                        let event = fields.nth(1)?.strip_prefix("syscalls:sys_enter_")?;
                        Some((event.to_owned(), count))
                    })
                    .collect()
            })
            .collect()
    }
}

/// Counts each pair's system calls per call over `rounds` rounds of its
/// own, and prints them.
pub fn count_syscalls(pairs: &mut [Pair], plan: Plan, rounds: usize) {
    let pids: Vec<u32> = pairs
        .iter()
        .flat_map(|p| [p.client.pid(), p.server.pid()])
        .collect();
    let Some(count) = SyscallCount::start(&pids) else {
        println!(
            "system calls: not counted (`perf stat` cannot count tracepoints here, or did not start)"
        );
        return;
    };
    let mut calls = vec![0; pairs.len()];
    for _ in 0..rounds {
        for (pair, calls) in pairs.iter_mut().zip(&mut calls) {
            *calls += pair.round(plan.length).calls;
        }
    }
    let counts = count.stop();
    for (k, pair) in pairs.iter().enumerate() {
        let mut line = format!("system calls per call, {}:", pair.name);
        for (side, counts) in [("client", &counts[2 * k]), ("server", &counts[2 * k + 1])] {
            let _ = write!(line, " {side}");
            for syscall in SYSCALLS {
                let n = counts.get(syscall).copied().unwrap_or(0);
                if n > 0 {
                    let _ = write!(line, " {syscall} {:.2}", n as f64 / calls[k].max(1) as f64);
                }
            }
            line.push(';');
        }
        line.pop();
        println!("{line}");
    }
}
