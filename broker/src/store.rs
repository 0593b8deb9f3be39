//! Persistence for the embedded broker: retained messages, persistent sessions with their
//! subscriptions, queued QoS 1/2 deliveries and received QoS 2 packet ids, in a redb file.
//!
//! Writes go to one writer thread that commits whatever has arrived as one transaction (group
//! commit), then advances a *committed ticket*. Each write gets a ticket when submitted; a
//! connection holds back an acknowledgement (PUBACK, PUBREC, SUBACK, CONNACK...) until the
//! ticket of the writes it depends on is committed. With `sync = "always"` a commit is fsynced
//! (redb `Durability::Immediate`), so `kill -9` loses nothing that was acknowledged.
//!
//! Records reuse the MQTT codec: a stored message is its PUBLISH (MQTT 5 form, with the
//! delivery's QoS, RETAIN and subscription identifiers) after the time it was received and,
//! for a QoS 2 delivery already sent, its packet id and step — so that after a crash it is
//! resent with the same id (PUBLISH with DUP, or PUBREL) and delivered once [MQTT-4.4.0-1].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kite_mqtt::codec::Publish;
use kite_mqtt::{Limits, MqttStr, Packet, QoS, Version};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Message, SubscribeEntry, lock};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const QOS2_IN: TableDefinition<(&str, u16), ()> = TableDefinition::new("qos2_in");

/// The layout of the data this version writes; another value in a file is refused.
const FORMAT: u64 = 2;

/// The data file's name in the data directory.
pub const FILE_NAME: &str = "broker.redb";

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sync {
    /// fsync every commit before the acknowledgements it holds back are sent: nothing
    /// acknowledged is lost, even on power loss.
    #[default]
    Always,
    /// Commit without fsync and fsync once a second: faster; a crash of the machine (or of
    /// Kite) may lose up to the last second of acknowledged messages.
    Periodic,
}

/// Why the data file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb refused the file or failed.
    #[error(
        "broker data file {path}: {detail} (move it away to start with an empty broker, or point [broker] data_dir elsewhere)"
    )]
    Database {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The file was written by an incompatible version of Kite.
    #[error(
        "broker data file {path} has format {found}, this Kite reads format {FORMAT}: use the Kite version that wrote it, or move the file away"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u64,
    },
    /// A record could not be read back.
    #[error("broker data file {path}: corrupt {what} record for {key:?}; move the file away")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The table.
        what: &'static str,
        /// The record's key.
        key: String,
    },
}

/// One write.
#[derive(Debug)]
pub(crate) enum Op {
    PutRetained(String, Vec<u8>),
    DelRetained(String),
    PutSession(String, Vec<u8>),
    /// The session, its queue and its QoS 2 ids.
    DelSession(String),
    PutQueued(String, u64, Vec<u8>),
    DelQueued(String, u64),
    PutQos2(String, u16),
    DelQos2(String, u16),
}

type Writes = mpsc::Sender<(u64, Op)>;

/// The store: submit writes, wait for their ticket.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    /// The last ticket given, and the writer's channel (`None` once closed).
    submit: Mutex<(u64, Option<Writes>)>,
    committed: tokio::sync::watch::Receiver<u64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held (shared) by a section whose writes must commit together ([`Store::section`]);
    /// the writer holds it exclusively while it gathers a batch, so a section's writes are all
    /// in one transaction or none is, and [`Store::close`] never cuts one in two.
    sections: Arc<RwLock<()>>,
    /// The last ticket whose write is in the writer's channel.
    submitted: Arc<AtomicU64>,
}

/// What was in the file at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub retained: Vec<Message>,
    pub sessions: Vec<LoadedSession>,
    /// The highest queue sequence number in use.
    pub max_seq: u64,
}

#[derive(Debug)]
pub(crate) struct LoadedSession {
    pub client_id: String,
    pub record: SessionRecord,
    /// Queued deliveries, oldest first.
    pub queue: Vec<StoredDelivery>,
    pub qos2_in: Vec<u16>,
}

/// A delivery read back from the store.
#[derive(Debug)]
pub(crate) struct StoredDelivery {
    pub seq: u64,
    pub msg: Message,
    pub qos: QoS,
    pub retain: bool,
    pub ids: Vec<u32>,
    /// Sent already (QoS 2): its packet id and what it awaits.
    pub sent: Option<(u16, Sent)>,
}

/// The step a sent QoS 2 delivery is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// PUBLISH sent, awaiting PUBREC.
    AwaitingRec = 1,
    /// PUBREL sent, awaiting PUBCOMP.
    AwaitingComp = 2,
}

/// A persistent session's own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    pub expiry: u32,
    /// The login that made the session (`None`: made without one, or stored by a version of
    /// Kite that did not record it: the next login to resume it adopts it).
    pub user: Option<String>,
    /// Unix seconds of the disconnect; 0 while connected.
    pub disconnected_at: u64,
    pub subscriptions: Vec<(String, SubscribeEntry)>,
}

pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn db_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

impl Store {
    /// Opens (or creates) `dir/broker.redb`, reads it, and starts the writer thread.
    pub(crate) fn open(dir: &Path, sync: Sync) -> Result<(Self, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database {
            path: dir.to_owned(),
            detail: format!("cannot create the data directory: {e}"),
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| db_error(&path, e))?;
        let loaded = Self::init_and_load(&db, &path)?;
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
        let thread_path = path.clone();
        let sections = Arc::new(RwLock::new(()));
        let submitted = Arc::new(AtomicU64::new(0));
        let (writer_sections, writer_submitted) = (sections.clone(), submitted.clone());
        let thread = std::thread::Builder::new()
            .name("kite-store".into())
            .spawn(move || {
                writer(
                    db,
                    rx,
                    committed_tx,
                    sync,
                    &thread_path,
                    (&writer_sections, &writer_submitted),
                )
            })
            .map_err(|e| db_error(&path, format!("cannot start the writer thread: {e}")))?;
        Ok((
            Self {
                path,
                submit: Mutex::new((0, Some(tx))),
                committed,
                writer: Mutex::new(Some(thread)),
                sections,
                submitted,
            },
            loaded,
        ))
    }

    /// The data file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Queues writes (applied in submission order); returns the ticket to wait for.
    pub(crate) fn submit(&self, ops: impl IntoIterator<Item = Op>) -> u64 {
        let mut s = lock(&self.submit);
        let (ticket, tx) = &mut *s;
        for op in ops {
            *ticket += 1;
            if let Some(t) = tx
                && t.send((*ticket, op)).is_err()
            {
                *tx = None;
            }
        }
        self.submitted
            .store(*ticket, std::sync::atomic::Ordering::Release);
        *ticket
    }

    /// A section: every write submitted while the guard lives commits in the same transaction
    /// (or none does, if the broker stops first). Not to be nested on one thread.
    pub(crate) fn section(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.sections
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The committed ticket, for connections holding back acknowledgements.
    pub(crate) fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Stops the writer after what was submitted (at shutdown), and waits for it: then the
    /// file is closed.
    pub(crate) fn close(&self) {
        {
            // Not in the middle of a section: its writes go whole, or (after this) not at all.
            let _whole = self
                .sections
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            lock(&self.submit).1 = None;
        }
        if let Some(t) = lock(&self.writer).take() {
            let _ = t.join();
        }
    }

    fn init_and_load(db: &Database, path: &Path) -> Result<Loaded, StoreError> {
        let e = |e: redb::Error| db_error(path, e);
        let txn = db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|x| e(x.into()))?;
            let found = meta
                .get("format")
                .map_err(|x| e(x.into()))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT).map_err(|x| e(x.into()))?;
                }
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(StoreError::Format {
                        path: path.to_owned(),
                        found,
                    });
                }
            }
            txn.open_table(RETAINED).map_err(|x| e(x.into()))?;
            txn.open_table(SESSIONS).map_err(|x| e(x.into()))?;
            txn.open_table(QUEUE).map_err(|x| e(x.into()))?;
            txn.open_table(QOS2_IN).map_err(|x| e(x.into()))?;
        }
        txn.commit().map_err(|x| e(x.into()))?;

        let corrupt = |what, key: String| StoreError::Corrupt {
            path: path.to_owned(),
            what,
            key,
        };
        let read = db.begin_read().map_err(|x| e(x.into()))?;
        let mut loaded = Loaded::default();
        let retained = read.open_table(RETAINED).map_err(|x| e(x.into()))?;
        for row in retained.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let d = decode_message(v.value())
                .ok_or_else(|| corrupt("retained", k.value().to_owned()))?;
            loaded.retained.push(d.msg);
        }
        let sessions = read.open_table(SESSIONS).map_err(|x| e(x.into()))?;
        let queue = read.open_table(QUEUE).map_err(|x| e(x.into()))?;
        let qos2 = read.open_table(QOS2_IN).map_err(|x| e(x.into()))?;
        for row in sessions.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let client_id = k.value().to_owned();
            let record =
                decode_session(v.value()).ok_or_else(|| corrupt("session", client_id.clone()))?;
            let mut s = LoadedSession {
                client_id: client_id.clone(),
                record,
                queue: Vec::new(),
                qos2_in: Vec::new(),
            };
            let range = (client_id.as_str(), 0u64)..=(client_id.as_str(), u64::MAX);
            for row in queue.range(range).map_err(|x| e(x.into()))? {
                let (k, v) = row.map_err(|x| e(x.into()))?;
                let seq = k.value().1;
                let mut d = decode_message(v.value())
                    .ok_or_else(|| corrupt("queued message", format!("{client_id} #{seq}")))?;
                d.seq = seq;
                loaded.max_seq = loaded.max_seq.max(seq);
                s.queue.push(d);
            }
            let range = (client_id.as_str(), 0u16)..=(client_id.as_str(), u16::MAX);
            for row in qos2.range(range).map_err(|x| e(x.into()))? {
                let (k, _) = row.map_err(|x| e(x.into()))?;
                s.qos2_in.push(k.value().1);
            }
            loaded.sessions.push(s);
        }
        Ok(loaded)
    }
}

fn writer(
    db: Database,
    rx: mpsc::Receiver<(u64, Op)>,
    committed: tokio::sync::watch::Sender<u64>,
    sync: Sync,
    path: &Path,
    (sections, submitted): (&RwLock<()>, &AtomicU64),
) {
    let mut last_sync = Instant::now();
    let mut dirty = false;
    loop {
        let first = match sync {
            Sync::Always => rx.recv().ok(),
            Sync::Periodic => match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut batch = Vec::new();
        if let Some(op) = first {
            batch.push(op);
            // No section half-submitted: wait for the one under way to finish. Then every
            // write submitted until now is in the channel, and the batch stops at its cap only
            // past them, where no section can be cut (none is under way while this is held).
            let _whole = sections
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let whole_upto = submitted.load(std::sync::atomic::Ordering::Acquire);
            loop {
                if batch.len() >= 50_000 && batch.last().is_some_and(|(t, _)| *t >= whole_upto) {
                    break;
                }
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
        } else if sync == Sync::Always {
            break; // every sender is gone
        }
        let flush =
            sync == Sync::Always || (dirty && last_sync.elapsed() >= Duration::from_secs(1));
        if batch.is_empty() && !flush {
            continue;
        }
        let durability = if flush {
            Durability::Immediate
        } else {
            Durability::None
        };
        match apply(&db, &batch, durability) {
            Ok(()) => {
                if flush {
                    last_sync = Instant::now();
                    dirty = false;
                } else {
                    dirty = true;
                }
                if let Some((ticket, _)) = batch.last() {
                    committed.send_replace(*ticket);
                }
            }
            Err(e) => {
                // Acknowledgements that wait for this write are never sent: clients see
                // their messages unacknowledged, which is the truth.
                tracing::error!(
                    "broker data file {}: commit failed, the broker stops acknowledging persistent messages: {e}",
                    path.display()
                );
                return;
            }
        }
    }
    if dirty {
        let _ = apply(&db, &[], Durability::Immediate);
    }
}

fn apply(db: &Database, batch: &[(u64, Op)], durability: Durability) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)
        .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
    {
        let mut retained = txn.open_table(RETAINED)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let mut qos2 = txn.open_table(QOS2_IN)?;
        for (_, op) in batch {
            match op {
                Op::PutRetained(t, v) => {
                    retained.insert(t.as_str(), v.as_slice())?;
                }
                Op::DelRetained(t) => {
                    retained.remove(t.as_str())?;
                }
                Op::PutSession(c, v) => {
                    sessions.insert(c.as_str(), v.as_slice())?;
                }
                Op::DelSession(c) => {
                    sessions.remove(c.as_str())?;
                    let c = c.as_str();
                    queue.retain_in((c, 0u64)..=(c, u64::MAX), |_, _| false)?;
                    qos2.retain_in((c, 0u16)..=(c, u16::MAX), |_, _| false)?;
                }
                Op::PutQueued(c, seq, v) => {
                    queue.insert((c.as_str(), *seq), v.as_slice())?;
                }
                Op::DelQueued(c, seq) => {
                    queue.remove((c.as_str(), *seq))?;
                }
                Op::PutQos2(c, id) => {
                    qos2.insert((c.as_str(), *id), ())?;
                }
                Op::DelQos2(c, id) => {
                    qos2.remove((c.as_str(), *id))?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// A message as stored: when it was received (Unix ms), then its PUBLISH in MQTT 5 form with
/// this delivery's QoS, RETAIN and subscription identifiers.
pub(crate) fn encode_message(
    msg: &Message,
    qos: QoS,
    retain: bool,
    ids: &[u32],
    sent: Option<(u16, Sent)>,
    now: Instant,
) -> Vec<u8> {
    let waited = now.saturating_duration_since(msg.received);
    let received = unix_now().saturating_sub(waited).as_millis() as u64;
    let mut properties = msg.properties.clone();
    if !ids.is_empty() {
        properties.subscription_identifiers = ids.to_vec();
    }
    let p = Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: msg.topic.clone(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
        properties,
        payload: msg.payload.clone(),
    });
    let mut buf = BytesMut::with_capacity(16 + msg.size());
    buf.put_u64(received);
    let (packet_id, step) = sent.map_or((0, 0), |(id, s)| (id, s as u8));
    buf.put_u16(packet_id);
    buf.put_u8(step);
    if let Err(e) = p.encode(Version::V5, &mut buf) {
        // A message the broker accepted is always encodable; log if not.
        tracing::error!("cannot store a message for {}: {e}", msg.topic);
    }
    buf.to_vec()
}

fn decode_message(bytes: &[u8]) -> Option<StoredDelivery> {
    let mut b = Bytes::copy_from_slice(bytes);
    if b.len() < 11 {
        return None;
    }
    let received_ms = b.get_u64();
    let packet_id = b.get_u16();
    let sent = match (packet_id, b.get_u8()) {
        (0, 0) => None,
        (id, 1) if id != 0 => Some((id, Sent::AwaitingRec)),
        (id, 2) if id != 0 => Some((id, Sent::AwaitingComp)),
        _ => return None,
    };
    let mut buf = BytesMut::from(&b[..]);
    let Ok(Some(Packet::Publish(mut p))) =
        kite_mqtt::decode(&mut buf, Version::V5, &Limits::default())
    else {
        return None;
    };
    let ids = std::mem::take(&mut p.properties.subscription_identifiers);
    let (qos, retain) = (p.qos, p.retain);
    let waited = unix_now().saturating_sub(Duration::from_millis(received_ms));
    let now = Instant::now();
    let received = now.checked_sub(waited).unwrap_or(now);
    let mut msg = Message::from_publish(p, None, received);
    msg.qos = qos;
    Some(StoredDelivery {
        seq: 0,
        msg,
        qos,
        retain,
        ids,
        sent,
    })
}

pub(crate) fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let mut b = BytesMut::new();
    // Version 2: version 1 + the owning user after `disconnected_at`.
    b.put_u8(2);
    b.put_u32(r.expiry);
    b.put_u64(r.disconnected_at);
    match &r.user {
        // A flag, then the length (a JWT's `sub` may be longer than an MQTT string).
        Some(u) => {
            b.put_u8(1);
            b.put_u32(u.len() as u32);
            b.put_slice(u.as_bytes());
        }
        None => b.put_u8(0),
    }
    b.put_u32(r.subscriptions.len() as u32);
    for (filter, e) in &r.subscriptions {
        b.put_u16(filter.len() as u16);
        b.put_slice(filter.as_bytes());
        b.put_u8(e.qos as u8 | u8::from(e.no_local) << 2 | u8::from(e.retain_as_published) << 3);
        b.put_u32(e.id.unwrap_or(0));
    }
    b.to_vec()
}

fn decode_session(bytes: &[u8]) -> Option<SessionRecord> {
    let mut b = bytes;
    if b.remaining() < 17 {
        return None;
    }
    let version = b.get_u8();
    if !(1..=2).contains(&version) {
        return None;
    }
    let expiry = b.get_u32();
    let disconnected_at = b.get_u64();
    let mut user = None;
    if version == 2 {
        if b.remaining() < 1 {
            return None;
        }
        if b.get_u8() == 1 {
            if b.remaining() < 4 {
                return None;
            }
            let len = usize::try_from(b.get_u32()).ok()?;
            if b.remaining() < len {
                return None;
            }
            user = Some(std::str::from_utf8(&b[..len]).ok()?.to_owned());
            b.advance(len);
        }
    }
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32();
    let mut subscriptions = Vec::new();
    for _ in 0..n {
        if b.remaining() < 2 {
            return None;
        }
        let len = usize::from(b.get_u16());
        if b.remaining() < len + 5 {
            return None;
        }
        let filter = std::str::from_utf8(&b[..len]).ok()?.to_owned();
        b.advance(len);
        let opts = b.get_u8();
        let id = b.get_u32();
        subscriptions.push((
            filter,
            SubscribeEntry {
                qos: QoS::from_u8(opts & 3)?,
                no_local: opts & 4 != 0,
                retain_as_published: opts & 8 != 0,
                id: (id != 0).then_some(id),
            },
        ));
    }
    Some(SessionRecord {
        expiry,
        user,
        disconnected_at,
        subscriptions,
    })
}

/// The session record of a session's current state.
pub(crate) fn session_record(
    expiry: u32,
    user: Option<&str>,
    disconnected_at: u64,
    subscriptions: &std::collections::HashMap<MqttStr, SubscribeEntry>,
) -> Vec<u8> {
    encode_session(&SessionRecord {
        expiry,
        user: user.map(str::to_owned),
        disconnected_at,
        subscriptions: subscriptions
            .iter()
            .map(|(f, e)| (f.to_string(), *e))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retained(topic: &str) -> Op {
        let now = Instant::now();
        let msg = Message::from_publish(
            Publish {
                qos: QoS::AtLeastOnce,
                topic: topic.into(),
                retain: true,
                payload: Bytes::from_static(b"1"),
                ..Publish::default()
            },
            None,
            now,
        );
        Op::PutRetained(
            topic.into(),
            encode_message(&msg, QoS::AtLeastOnce, true, &[], None, now),
        )
    }

    /// A shutdown never cuts a section in two: `close` waits for the section under way, whose
    /// writes then all commit. (Before sections, `close` returned at once and the second write
    /// was refused: the first alone was on disk — a QoS 2 id without its deliveries.)
    #[test]
    fn close_waits_for_a_section_and_commits_all_of_it() {
        let dir = std::env::temp_dir().join(format!("kite-store-section-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (store, _) = Store::open(&dir, Sync::Always).unwrap();
        let (in_section, closing) = (mpsc::channel(), mpsc::channel::<()>());
        std::thread::scope(|scope| {
            let store = &store;
            scope.spawn(move || {
                let _section = store.section();
                store.submit([retained("a/first")]);
                in_section.0.send(()).unwrap();
                // Until the closer has had its chance to cut in.
                let _ = closing.1.recv();
                store.submit([retained("a/second")]);
            });
            in_section.1.recv().unwrap();
            let closer = scope.spawn(move || store.close());
            // Two seconds for `close` to finish if it does not wait (it used to at once).
            let deadline = Instant::now() + Duration::from_secs(2);
            while !closer.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!closer.is_finished(), "close did not wait for the section");
            closing.0.send(()).unwrap();
        });
        drop(store);
        let (store, loaded) = Store::open(&dir, Sync::Always).unwrap();
        let mut topics: Vec<String> = loaded
            .retained
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        topics.sort();
        assert_eq!(topics, ["a/first", "a/second"]);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_round_trip() {
        let now = Instant::now();
        let msg = Message::from_publish(
            Publish {
                qos: QoS::ExactlyOnce,
                topic: "a/b".into(),
                packet_id: 9,
                payload: Bytes::from_static(b"hello"),
                properties: kite_mqtt::codec::Properties {
                    message_expiry_interval: Some(60),
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                }
                .into(),
                ..Publish::default()
            },
            None,
            now,
        );
        let bytes = encode_message(&msg, QoS::AtLeastOnce, true, &[3, 4], None, now);
        let d = decode_message(&bytes).unwrap();
        assert_eq!(
            (d.qos, d.retain, d.ids, d.sent),
            (QoS::AtLeastOnce, true, vec![3, 4], None)
        );
        let back = d.msg;
        assert_eq!((&*back.topic, &back.payload[..]), ("a/b", &b"hello"[..]));
        assert_eq!(back.properties.content_type.as_deref(), Some("text/plain"));
        assert!(back.remaining_expiry(Instant::now()).unwrap() >= 59);
        assert!(decode_message(&bytes[..10]).is_none());
        let sent = encode_message(
            &msg,
            QoS::ExactlyOnce,
            false,
            &[],
            Some((77, Sent::AwaitingComp)),
            now,
        );
        assert_eq!(
            decode_message(&sent).unwrap().sent,
            Some((77, Sent::AwaitingComp))
        );

        let r = SessionRecord {
            expiry: 300,
            user: Some("alice".into()),
            disconnected_at: 1_700_000_000,
            subscriptions: vec![(
                "$share/g/x/#".into(),
                SubscribeEntry {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    id: Some(7),
                },
            )],
        };
        assert_eq!(decode_session(&encode_session(&r)), Some(r.clone()));
        let enc = encode_session(&r);
        assert!(decode_session(&enc[..enc.len() - 1]).is_none());
        let anonymous = SessionRecord {
            user: None,
            ..r.clone()
        };
        assert_eq!(
            decode_session(&encode_session(&anonymous)),
            Some(anonymous.clone())
        );
        // Version 1 (Kite before sessions had owners): read with no owner.
        let mut v1 = vec![1];
        v1.extend_from_slice(&300u32.to_be_bytes());
        v1.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        v1.extend_from_slice(&enc[enc.len() - (4 + 2 + 12 + 1 + 4)..]);
        assert_eq!(decode_session(&v1), Some(anonymous));
    }

    #[test]
    fn survives_reopen_and_refuses_other_formats() {
        let dir = std::env::temp_dir().join(format!("kite-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (store, loaded) = Store::open(&dir, Sync::Always).unwrap();
            assert!(loaded.sessions.is_empty());
            let mut committed = store.committed();
            let t = store.submit([
                Op::PutSession(
                    "c".into(),
                    encode_session(&SessionRecord {
                        expiry: 10,
                        user: None,
                        disconnected_at: 0,
                        subscriptions: vec![],
                    }),
                ),
                Op::PutQos2("c".into(), 5),
            ]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(committed.wait_for(|c| *c >= t)).unwrap();
            store.close();
        }
        let (store, loaded) = Store::open(&dir, Sync::Always).unwrap();
        store.close();
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.sessions[0].qos2_in, vec![5]);

        std::fs::write(dir.join(FILE_NAME), b"not a database at all, just bytes").unwrap();
        let err = Store::open(&dir, Sync::Always).unwrap_err().to_string();
        assert!(err.contains("broker.redb"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
