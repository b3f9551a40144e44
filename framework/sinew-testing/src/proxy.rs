//! A fault-injecting TCP proxy, for tests of how a client behaves when the
//! network between it and a server misbehaves.
//!
//! [`ChaosProxy`] listens on a loopback port and forwards each connection
//! to one upstream address. [`ChaosProxy::set`] changes what it does, at
//! once, for the connections it holds and the ones to come:
//!
//! | [`Fault`] | established connections | new connections |
//! |---|---|---|
//! | `Pass` | forwarded | forwarded |
//! | `Delay(d)` | each chunk held `d` before it is passed on | same |
//! | `Drop` | closed | accepted and closed at once |
//! | `BlackHole` | forwarded | accepted; nothing passes either way, nothing is closed |
//! | `Silent` | nothing passes either way, nothing is closed | same |
//! | `Flap { up, down }` | `Pass` for `up`, then `Drop` for `down`, and again | same |
//!
//! While nothing passes, the proxy reads nothing either, so what it holds
//! is bounded by one read buffer per direction and connection. It binds
//! loopback only, and stops (closing everything) when dropped.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does to the traffic; see [`ChaosProxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Hold each chunk this long before passing it on.
    Delay(Duration),
    /// Close every connection, and every new one at once.
    Drop,
    /// Accept new connections and pass nothing on them; established ones
    /// still work.
    BlackHole,
    /// Pass nothing on any connection, and close none: a peer that stopped
    /// answering without a FIN or a reset.
    Silent,
    /// `Pass` for `up`, then `Drop` for `down`, over and over.
    Flap {
        /// How long the link is up.
        up: Duration,
        /// How long it is down.
        down: Duration,
    },
}

/// What the connections act on: the fault, and how many times the link
/// has been dropped (a connection made before a drop is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    fault: Fault,
    drops: u64,
}

/// A fault-injecting TCP proxy in front of one upstream address.
///
/// [`ChaosProxy::set`] changes what it does at once, for the connections
/// it holds and the ones to come: pass, delay each chunk, drop every
/// connection, black-hole new ones, go silent on all without closing any,
/// or flap between up and dropped (see [`Fault`]). While nothing passes it
/// reads nothing, so it holds one read buffer per direction and
/// connection at most. It binds loopback only, and closes everything when
/// dropped.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    link: Arc<watch::Sender<Link>>,
    accepted: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
    flap: Option<JoinHandle<()>>,
}

// === impl ChaosProxy ===

impl ChaosProxy {
    /// A proxy on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (link, _) = watch::channel(Link {
            fault: Fault::Pass,
            drops: 0,
        });
        let link = Arc::new(link);
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            link.clone(),
            accepted.clone(),
        ));
        Self {
            addr,
            link,
            accepted,
            accept,
            flap: None,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as an `http://` URI, for a client's endpoint list.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Injects `fault` from now on.
    pub fn set(&mut self, fault: Fault) {
        if let Some(flap) = self.flap.take() {
            flap.abort();
        }
        match fault {
            Fault::Flap { up, down } => {
                let link = self.link.clone();
                apply(&link, Fault::Pass);
                self.flap = Some(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(up).await;
                        apply(&link, Fault::Drop);
                        tokio::time::sleep(down).await;
                        apply(&link, Fault::Pass);
                    }
                }));
            }
            fault => apply(&self.link, fault),
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(flap) = self.flap.take() {
            flap.abort();
        }
        // Every connection's pumps end when the link says so.
        apply(&self.link, Fault::Drop);
    }
}

fn apply(link: &watch::Sender<Link>, fault: Fault) {
    link.send_modify(|link| {
        link.fault = fault;
        if fault == Fault::Drop {
            link.drops += 1;
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    link: Arc<watch::Sender<Link>>,
    accepted: Arc<AtomicUsize>,
) {
    while let Ok((client, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        let mut watch = link.subscribe();
        let now = *watch.borrow_and_update();
        match now.fault {
            Fault::Drop => drop(client),
            Fault::BlackHole => {
                // Held open, unread, until the link drops.
                tokio::spawn(async move {
                    let _held = client;
                    let _ = watch.wait_for(|l| l.drops != now.drops).await;
                });
            }
            _ => {
                let up_link = link.subscribe();
                let down_link = link.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, up_link, now.drops);
                    let down = pump(server_read, client_write, down_link, now.drops);
                    // When either direction ends, both halves are dropped.
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
            }
        }
    }
}

/// Passes bytes from `from` to `to` as the link allows, until either side
/// closes or the link drops after `drops` drops.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
    drops: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While nothing may pass, read nothing.
        let Ok(now) = link
            .wait_for(|l| l.drops != drops || !matches!(l.fault, Fault::Silent))
            .await
            .map(|l| *l)
        else {
            return;
        };
        if now.drops != drops {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // The fault changed while waiting to read: look again.
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let delay = match link.borrow().fault {
            Fault::Delay(delay) => Some(delay),
            _ => None,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        // A chunk read just before the link went silent waits for it.
        let Ok(now) = link
            .wait_for(|l| l.drops != drops || !matches!(l.fault, Fault::Silent))
            .await
            .map(|l| *l)
        else {
            return;
        };
        if now.drops != drops || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes what it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    const SHORT: Duration = Duration::from_millis(200);
    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn passes_then_goes_silent_then_passes_again() {
        let mut proxy = ChaosProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut stream, LONG).await.unwrap(), b"ping");
        proxy.set(Fault::Silent);
        assert_eq!(echo(&mut stream, SHORT).await, None, "nothing passes");
        proxy.set(Fault::Pass);
        // What was held goes through now, the connection still open.
        let mut buf = [0u8; 4];
        tokio::time::timeout(LONG, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(echo(&mut stream, LONG).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn drop_closes_established_and_new_connections() {
        let mut proxy = ChaosProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echo(&mut stream, LONG).await.is_some());
        proxy.set(Fault::Drop);
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(LONG, stream.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let read = tokio::time::timeout(LONG, fresh.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "closed at once: {read:?}");
    }

    #[tokio::test]
    async fn a_black_hole_takes_new_connections_and_answers_nothing() {
        let mut proxy = ChaosProxy::start(echo_server().await).await;
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echo(&mut before, LONG).await.is_some());
        proxy.set(Fault::BlackHole);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo(&mut fresh, SHORT).await, None);
        assert!(
            echo(&mut before, LONG).await.is_some(),
            "established ones work"
        );
    }

    #[tokio::test]
    async fn delay_holds_each_chunk() {
        let mut proxy = ChaosProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set(Fault::Delay(Duration::from_millis(150)));
        let started = tokio::time::Instant::now();
        assert!(echo(&mut stream, LONG).await.is_some());
        // Held each way.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn flap_drops_connections_and_comes_back() {
        let upstream = echo_server().await;
        let mut proxy = ChaosProxy::start(upstream).await;
        proxy.set(Fault::Flap {
            up: Duration::from_millis(100),
            down: Duration::from_millis(100),
        });
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        // Within a few cycles the connection is dropped...
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(LONG, stream.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)));
        // ...and a later one goes through while the link is up.
        let mut worked = false;
        for _ in 0..50 {
            if let Ok(mut fresh) = TcpStream::connect(proxy.addr()).await
                && echo(&mut fresh, Duration::from_millis(50)).await.is_some()
            {
                worked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(worked, "the link comes back up");
    }
}
