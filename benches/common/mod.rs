//! What the benchmarks share: the CPU time this process and the services
//! on this host spent, whether a service answers, and the instrument
//! ([`instrument`]) that runs each side in a process of its own.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each benchmark includes this module and uses what it needs"
)]

pub mod instrument;

use std::{
    collections::HashMap,
    future::Future,
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

/// CPU time this process has used so far, user and system, all threads:
/// from `/proc/self/stat` (Linux), in clock ticks taken as 10ms (`USER_HZ`
/// is 100 on x86 and ARM Linux). `None` where there is no such file.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: the fields that
    // follow it are counted from its closing parenthesis. utime and stime
    // are fields 14 and 15 of the line, so the 12th and 13th after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// The time on CPU so far of each thread of the processes on this host
/// named `postgres` or `nats-server` (the services, when they run here; any
/// other such process counts too), in nanoseconds by thread id, from
/// `/proc/<pid>/task/<tid>/schedstat` (the ticks of `/proc/<pid>/stat` lag
/// for another process over a fraction of a second). `None` where there is
/// no such file.
pub fn services_cpu_time() -> Option<HashMap<String, u64>> {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if !matches!(comm.trim_end(), "postgres" | "nats-server") {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let on_cpu = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(on_cpu) = on_cpu {
                threads.insert(task.file_name().to_string_lossy().into_owned(), on_cpu);
            }
        }
    }
    Some(threads)
}

/// The services' CPU time spent since `start`, per message, in
/// microseconds: each thread's time since then (all of it for a thread
/// started since). A thread that ended meanwhile (a database connection
/// closed) takes its time with it, and is not counted.
pub fn services_cpu_per_message(
    start: Option<HashMap<String, u64>>,
    messages: usize,
) -> Option<f64> {
    let (start, now) = (start?, services_cpu_time()?);
    let spent: u64 = now
        .iter()
        .map(|(thread, on_cpu)| on_cpu.saturating_sub(start.get(thread).copied().unwrap_or(0)))
        .sum();
    Some(spent as f64 / 1e3 / messages as f64)
}

/// Whether something listens at the host and port of `url`.
pub fn reachable(url: &str, default_port: u16) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split(['/', '?']).next().unwrap_or(host);
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    addrs
        .iter()
        .any(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok())
}

/// One call, made by one of a round's callers.
pub type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The number in the environment variable `key`, else `default`.
pub fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One side's numbers for a round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Calls a second.
    pub rps: f64,
    /// Calls made.
    pub calls: usize,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// CPU time the whole process spent per call during the round, in
    /// microseconds, where the system tells it (Linux): every thread's,
    /// the servers' and the telemetry's included.
    pub cpu_us: Option<f64>,
}

/// Runs `callers` callers, each making `call` after `call`, for `seconds`,
/// and measures them.
pub async fn round<C, F>(client: C, call: F, seconds: u64, callers: usize) -> Round
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Call + Send + Sync + 'static,
{
    round_for(client, call, Duration::from_secs(seconds), callers).await
}

/// [`round`] for a `length` of time.
pub async fn round_for<C, F>(client: C, call: F, length: Duration, callers: usize) -> Round
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Call + Send + Sync + 'static,
{
    let call = Arc::new(call);
    let end = Instant::now() + length;
    let start = Instant::now();
    let cpu_start = process_cpu_time();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                while Instant::now() < end {
                    let begun = Instant::now();
                    call(client.clone()).await;
                    latencies.push(begun.elapsed().as_micros() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Round {
        rps: latencies.len() as f64 / elapsed,
        calls: latencies.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        cpu_us: cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / latencies.len() as f64),
    }
}

/// The median of `values` by `key`.
pub fn median(values: &mut [Round], key: impl Fn(&Round) -> f64) -> f64 {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    key(&values[values.len() / 2])
}

/// The median CPU time per call of `values`, if every round has one.
pub fn median_cpu(values: &mut [Round]) -> Option<f64> {
    if values.iter().any(|r| r.cpu_us.is_none()) {
        return None;
    }
    Some(median(values, |r| r.cpu_us.unwrap_or_default()))
}

/// `, cpu <n>us/call` for a round that measured it.
pub fn cpu_text(round: &Round) -> String {
    round
        .cpu_us
        .map(|cpu| format!(", cpu {cpu:.1}us/call"))
        .unwrap_or_default()
}
