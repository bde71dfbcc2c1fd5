//! The SIP signaling edge: transports, message handling around rsip, transactions, digest
//! authentication, the registrar and the back-to-back user agent that sets up calls. Stateless in the durable sense: it reads a `RoutingView`
//! and writes what it learns as events through domain commands.

pub mod answer;
pub mod auth;
pub mod b2bua;
pub mod deadlines;
pub mod dialog;
pub mod digest;
pub mod edge;
pub mod flash_call;
pub mod liveness;
pub mod lockout;
pub mod media;
pub mod message;
pub mod outgoing;
pub mod peer_path;
pub mod registrar;
pub mod requests;
pub mod security_log;
pub mod sweeper;
pub mod transaction;
pub mod transport;
pub mod trunk;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use infra::EventStore;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::AuthSettings;
pub use edge::Edge;
pub use registrar::RegistrarSettings;
pub use view::SharedView;

/// How often the routing view is looked at for callback requests to place.
const CALLBACK_POLL: Duration = Duration::from_millis(200);

/// How often expired contacts are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// UDP and TCP on the same address (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    pub auth: AuthSettings,
    pub registrar: RegistrarSettings,
    /// Carriers: where their requests may come from and what they deliver.
    pub trunks: Vec<trunk::Trunk>,
    /// The HMAC key of digest nonces; edges that share it accept each other's nonces.
    pub nonce_secret: Vec<u8>,
    pub nonce_lifetime_secs: u64,
    /// How long a call rings before it ends unanswered.
    pub ring_timeout: Duration,
    /// How long a call waits for the user's extension to call in (5 to 300 s).
    pub call_in_timeout: Duration,
    /// Where call-in notices are also POSTed (JSON), if anywhere.
    pub call_in_webhook: Option<String>,
    /// How often the edge records that it is alive while it has calls (`edge.alive`), and
    /// looks for calls of edges that are gone.
    pub heartbeat: Duration,
    /// The RTP relay's settings; `None` turns the relay off.
    pub media: Option<media::MediaSettings>,
    /// Who the edge's events name as their actor.
    pub actor: String,
    /// The edge's defences: authentication lockout, transport and registration bounds.
    pub security: SecuritySettings,
}

/// The bounds the edge holds against a hostile network (config `security.*`).
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub lockout: lockout::LockoutSettings,
    pub tcp: transport::tcp::TcpLimits,
    pub calls: b2bua::spending::CallLimits,
    pub kept_responses: edge::KeptResponses,
    /// Place calls to destinations the tariff has no rate for (listed as unrated) instead of
    /// refusing them.
    pub allow_unrated_calls: bool,
    /// An extension without a PIN may key a destination at the access-number menu
    /// (`security.keypad_without_pin`).
    pub keypad_without_pin: bool,
    /// The longest an answered call lasts before the edge hangs it up
    /// (`sip.max_call_duration_secs`).
    pub max_call_duration: Duration,
    /// Call-ins are matched on the carrier's caller ID alone, no token proved
    /// (`sip.call_in_trust_caller_id`); without it a call-in keys its token first.
    pub call_in_trusts_caller_id: bool,
    /// Extensions calling through a carrier may transfer their calls
    /// (`sip.allow_extension_transfer`).
    pub extension_transfers: bool,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            lockout: Default::default(),
            tcp: Default::default(),
            calls: Default::default(),
            kept_responses: Default::default(),
            allow_unrated_calls: false,
            keypad_without_pin: false,
            max_call_duration: Duration::from_secs(4 * 3600),
            call_in_trusts_caller_id: false,
            extension_transfers: false,
        }
    }
}

/// A started edge.
pub struct RunningEdge {
    pub edge: Arc<Edge>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Binds UDP and TCP, follows the log into `view`, and serves until `stopped` turns true.
pub async fn start(
    settings: EdgeSettings,
    store: Arc<dyn EventStore>,
    view: SharedView,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<RunningEdge> {
    let (udp, tcp) = bind(settings.listen).await?;
    let udp = Arc::new(udp);
    let (udp_addr, tcp_addr) = (udp.local_addr()?, tcp.local_addr()?);
    let (auth, blocked_users) = auth::Authenticator::new(
        settings.auth.clone(),
        settings.nonce_secret.clone(),
        settings.nonce_lifetime_secs,
        settings.security.lockout.clone(),
    );
    let auth = Arc::new(auth);
    let registrar = registrar::Registrar::new(settings.registrar.clone(), auth.clone());
    let edge = Edge::new(edge::Parts {
        store: store.clone(),
        view: view.clone(),
        registrar,
        auth,
        trunks: trunk::Trunks::new(settings.trunks.clone()),
        actor: settings.actor.clone(),
        udp: udp.clone(),
        local: udp_addr,
        ring_timeout: settings.ring_timeout,
        call_in_timeout: settings.call_in_timeout,
        call_in_webhook: settings
            .call_in_webhook
            .as_ref()
            .map(|url| Arc::new(infra::delivery::Webhook::new(url))),
        media: settings.media.clone().map(media::Media::new),
        tcp_limits: settings.security.tcp.clone(),
        call_limits: settings.security.calls.clone(),
        kept_responses: settings.security.kept_responses.clone(),
        allow_unrated_calls: settings.security.allow_unrated_calls,
        keypad_without_pin: settings.security.keypad_without_pin,
        call_in_trusts_caller_id: settings.security.call_in_trusts_caller_id,
        extension_transfers: settings.security.extension_transfers,
        max_call_duration: settings.security.max_call_duration,
    });
    // Calls name the edge: its stream says it started before any call does.
    liveness::record_start(&edge)
        .await
        .map_err(|e| std::io::Error::other(format!("recording the edge's start: {e}")))?;
    let mut tasks = vec![
        tokio::spawn(security_log::record_blocks(
            store.clone(),
            settings.actor.clone(),
            blocked_users,
            stopped.clone(),
        )),
        tokio::spawn(view::follow(store, view, stopped.clone())),
    ];
    let loops = std::thread::available_parallelism().map_or(2, |n| n.get());
    for _ in 0..loops {
        tasks.push(tokio::spawn(transport::udp::serve(
            edge.clone(),
            udp.clone(),
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(transport::tcp::serve(
        edge.clone(),
        tcp,
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(timers(edge.clone(), stopped.clone())));
    tasks.push(tokio::spawn(b2bua::callback::run(
        edge.clone(),
        CALLBACK_POLL,
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(sweeper::run(
        edge.clone(),
        settings.actor.clone(),
        SWEEP_EVERY,
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(liveness::run(
        edge.clone(),
        settings.heartbeat,
        stopped,
    )));
    Ok(RunningEdge {
        edge,
        udp: udp_addr,
        tcp: tcp_addr,
        tasks,
    })
}

/// UDP and TCP on one port: with port 0, the UDP socket's port is tried for TCP (a few
/// times, in case another process holds it).
async fn bind(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..10 {
        let udp = udp_socket(listen)?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for UDP and TCP")))
}

/// Socket buffer sizes asked for (the kernel caps them at net.core.rmem_max / wmem_max): a
/// burst of REGISTERs must queue in the socket rather than be dropped by the kernel.
const UDP_BUFFER: usize = 4 * 1024 * 1024;

fn udp_socket(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(UDP_BUFFER)),
        ("send", socket.set_send_buffer_size(UDP_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not enlarge the UDP {what} buffer");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    UdpSocket::from_std(socket.into())
}

async fn timers(edge: Arc<Edge>, mut stopped: watch::Receiver<bool>) {
    let max = Duration::from_millis(100);
    loop {
        let wait = edge.tick(max).await.max(Duration::from_millis(5));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
