//! Running the gateway on an already-bound listener until a shutdown signal.

use std::future::Future;
use std::time::Duration;

use kite_broker::ConnInfo;
use tokio::net::TcpListener;

use crate::http::{AppState, router};
use crate::listen::{Accepted, Incoming, Peer, Permits, Tls, accept_loop};

/// How long open sessions get to close after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the embedded broker's device listeners (TCP, and TLS with the gateway's certificate
/// when `tls_listener` is given) and its `$SYS` publisher on this runtime (when `state` has an
/// embedded broker). They stop when [`run`] shuts down.
pub fn start_broker(state: &AppState, listener: TcpListener, tls_listener: Option<TcpListener>) {
    if let Some(b) = state.broker() {
        b.start_timers();
        // The recorder subscribes before devices are let in (up to 5 s), so that the first
        // messages are recorded too.
        // So does the device monitor, so that it sees the first connections.
        let (let_in, ready) = tokio::sync::watch::channel(false);
        let subscribed: Vec<_> = [
            crate::recorder::start_embedded(state, b),
            crate::devices::start_embedded(state, b),
            state
                .alarms()
                .cloned()
                .map(|a| crate::alarming::start_embedded(a, state.devices().cloned(), b)),
        ]
        .into_iter()
        .flatten()
        .collect();
        tokio::spawn(async move {
            let all = async {
                for s in subscribed {
                    let _ = s.await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
            let_in.send_replace(true);
        });
        let tls = tls_listener.zip(state.tls().cloned());
        let listeners = [Some((listener, None))]
            .into_iter()
            .chain([tls.map(|(l, r)| (l, Some(Tls::Mqtt(r))))]);
        for (listener, tls) in listeners.flatten() {
            let (broker, stopping) = (b.clone(), b.clone());
            let permits = Permits::only(b.permits().clone());
            let per_address = state.per_address().clone();
            let mut ready = ready.clone();
            tokio::spawn(async move {
                let _ = ready.wait_for(|r| *r).await;
                accept_loop(
                    listener,
                    permits,
                    per_address,
                    tls,
                    async move { stopping.stopped().await },
                    move |a: Accepted| {
                        let broker = broker.clone();
                        async move {
                            let info = match a.stream.transport() {
                                "tls" => ConnInfo::tls(a.peer),
                                _ => ConnInfo::tcp(a.peer),
                            };
                            let _held = (a.permit, a.address);
                            broker.serve_connection(a.stream, info).await;
                        }
                    },
                )
                .await;
            });
        }
        let s = b.clone();
        tokio::spawn(async move { s.publish_sys().await });
        for bridge in &state.config().bridges {
            start_bridge(b, bridge);
        }
    }
}

/// Starts one `[[bridge]]` on the embedded broker: the gateway's connector (TCP, or TLS with
/// the bridge's files) opens its connections, trying the addresses in order each time.
fn start_bridge(broker: &kite_broker::Broker, bridge: &crate::config::Bridge) {
    let connector = match crate::upstream::Connector::new(std::slice::from_ref(&bridge.remote)) {
        Ok(c) => c,
        Err(e) => {
            // The config pass loaded the same files: they changed since.
            tracing::error!(bridge = %bridge.config.name, "the bridge cannot start: {e}");
            return;
        }
    };
    let remote = BridgeRemote {
        connector,
        upstream: bridge.remote.clone(),
    };
    tracing::info!(bridge = %bridge.config.name, "bridging to {}", remote_list(&bridge.remote));
    broker.start_bridge(bridge.config.clone(), std::sync::Arc::new(remote));
}

/// A bridge's remote broker, reached as an upstream is (its addresses in order, TLS).
struct BridgeRemote {
    connector: crate::upstream::Connector,
    upstream: crate::config::Upstream,
}

impl kite_broker::bridge::Remote for BridgeRemote {
    fn dial(&self) -> kite_broker::bridge::RemoteFuture<'_, kite_broker::bridge::Dialed> {
        Box::pin(async move {
            self.connector
                .connect_indexed(&self.upstream)
                .await
                .map(|(io, index)| {
                    (
                        Box::new(io) as Box<dyn kite_broker::bridge::BridgeIo>,
                        index,
                    )
                })
                .map_err(|e| format!("no address answered: {}", e.attempts()))
        })
    }

    fn first_answers(&self) -> kite_broker::bridge::RemoteFuture<'_, bool> {
        Box::pin(self.connector.answers(&self.upstream, 0))
    }

    fn any_answers(&self) -> kite_broker::bridge::RemoteFuture<'_, bool> {
        Box::pin(async move {
            for index in 0..self.upstream.addresses.len() {
                if self.connector.answers(&self.upstream, index).await {
                    return true;
                }
            }
            false
        })
    }
}

fn remote_list(remote: &crate::config::Upstream) -> String {
    let list: Vec<String> = remote.addresses.iter().map(ToString::to_string).collect();
    list.join(", ")
}

/// Serves the app, the API and `/mqtt` on `listener` until `shutdown` completes. Then it stops
/// accepting, tells every session to close (MQTT 5: DISCONNECT 0x8B), and waits for them up to
/// [`DRAIN_TIMEOUT`]. At most `max_connections` (from the config) TCP connections are open at
/// once: a permit is taken before each accept.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Permits::new(state.config().limits.max_connections);
    let per_address = state.per_address().clone();
    let head_timeout = state.config().limits.connect_timeout;
    let sessions = state.sessions().clone();
    let tls = state.tls().cloned();
    let broker = state.broker().cloned();
    let store_owner = broker.clone();
    let signal = {
        let sessions = sessions.clone();
        async move {
            shutdown.await;
            sessions.close_all();
            if let Some(b) = broker {
                b.shutdown();
            }
        }
    };
    let monitor = state.devices().cloned();
    crate::recorder::start_upkeep(&state);
    if state.broker().is_none() {
        crate::recorder::start_upstream(&state);
        crate::devices::start_upstream(&state);
        if let (Some(service), Some(alarms), Some(upstream)) = (
            state.alarms().cloned(),
            state.config().alarms.clone(),
            state.config().default_upstream().cloned(),
        ) {
            crate::alarming::start_upstream(
                service,
                state.devices().cloned(),
                upstream,
                (alarms.username, alarms.password),
                state.sessions().shutdown.subscribe(),
            );
        }
    }
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    if let Some(tls) = &tls {
        reload_on_sighup(tls.clone());
    }
    let listener = Incoming::spawn(listener, permits, per_address, tls, head_timeout)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    let left = sessions.drained(DRAIN_TIMEOUT).await;
    if let Some(m) = monitor {
        // What changed since the last save (once a second) is kept too.
        m.save().await;
    }
    if let Some(b) = store_owner {
        // Device connections got their DISCONNECT; once they have ended, what they stored is
        // committed and the file closed (one still open after the timeout has its later
        // writes refused whole, never cut: see the store's sections).
        if !b.connections_ended(DRAIN_TIMEOUT).await {
            tracing::warn!(
                "device connections still open after {}s; closing the broker's data file anyway",
                DRAIN_TIMEOUT.as_secs()
            );
        }
        b.close_store();
    }
    if left > 0 {
        tracing::warn!(
            "{left} sessions still open after {}s; stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// Reloads the certificate and key when the process gets SIGHUP.
fn reload_on_sighup(tls: crate::tls::Reloadable) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: the TLS certificate will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!("TLS certificate not reloaded, keeping the current one: {e}")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = tls;
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
