//! [`RedbStorage`]: the embedded [`Storage`], one redb file in the data directory
//! (`data.redb`; a `history.redb` of an earlier version is renamed to it on open).
//!
//! Each topic has a *stream* of its messages and one per numeric field (see
//! [`crate::history::numbers`]). A stream's points go into its *open chunk* (in memory) until
//! that reaches [`chunk::TARGET`] bytes; then the chunk is written as one row. So that an open
//! chunk survives a crash, every [`Storage::record`] also writes what it added, to every
//! stream, as one *tail segment* row — in the same transaction, so the batch is durable when
//! the call returns (fsynced with [`Sync::Always`]). A segment is deleted once every chunk
//! holding its entries is closed; at open the open chunks are rebuilt from the segments.
//! Tail segments are bounded: past [`TAIL_MAX`] bytes (or an eighth of `max_bytes`), or an
//! hour after the oldest, every open chunk is closed.
//!
//! Tables:
//! ```text
//! meta     &str → u64                       format, next ids, counters, bytes
//! streams  &str → [u8; 36]                  "topic" or "topic\0field" → id, closed_through,
//!                                           count, first, last (of its closed chunks)
//! chunks   u64 → &[u8]                      chunk id → header + entries (chunk.rs)
//! index    (u32, u64, u64) → u64            (stream, last t, chunk) → first t
//! age      (u64, u64) → ()                  (last t, chunk): the oldest first, for
//!                                           retention and max_bytes
//! tail     u64 → &[u8]                      segment → (stream, t, entry)...
//! devices  &str → &[u8]                     device id → the device (JSON)
//! alarm_rules &str → &[u8]                  rule name → the rule (JSON)
//! alarms   u64 → &[u8]                      alarm id → the alarm (JSON)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use crate::history::chunk::{self, Entries, Header, M4};
use crate::history::numbers;
use crate::history::{
    MAX_POINTS, Millis, Page, QueryError, Record, Series, Span, Stored, TopicInfo, Usage,
};
use crate::{Alarm, AlarmRule, Dashboard, DataError, Device, Storage, Sync};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
const INDEX: TableDefinition<(u32, u64, u64), u64> = TableDefinition::new("index");
const AGE: TableDefinition<(u64, u64), ()> = TableDefinition::new("age");
const TAIL: TableDefinition<u64, &[u8]> = TableDefinition::new("tail");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const ALARM_RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("alarm_rules");
const ALARMS: TableDefinition<u64, &[u8]> = TableDefinition::new("alarms");
const DASHBOARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("dashboards");

/// One row of `index` as a range yields it.
type IndexRow<'a> = Result<
    (
        redb::AccessGuard<'a, (u32, u64, u64)>,
        redb::AccessGuard<'a, u64>,
    ),
    redb::StorageError,
>;

/// The layout this version writes; another value in a file is refused.
const FORMAT: u64 = 1;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "data.redb";

/// Its name before it held more than the history: renamed on open.
const OLD_FILE_NAME: &str = "history.redb";

/// Tail segments kept at most (bytes; or an eighth of `max_bytes`) before every open chunk
/// is closed.
pub const TAIL_MAX: u64 = 8 << 20;

/// The oldest tail segment's age at most (ms) before every open chunk is closed.
const TAIL_AGE: u64 = 3_600_000;

/// Bytes counted for a chunk's rows beyond its value (its keys and the index rows).
const CHUNK_ROWS: u64 = 64;

/// Bytes counted for a tail segment's row beyond its value, and for a stream's row.
const ROW: u64 = 16;

/// Numeric fields charted per topic at most.
pub const MAX_FIELDS_PER_TOPIC: usize = 64;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this (ms) are removed by [`Storage::prune`]; `None`: kept.
    pub max_age: Option<u64>,
    /// The store is kept within this many bytes: beyond, the oldest are removed first.
    pub max_bytes: u64,
}

/// The embedded storage (see the module docs).
#[derive(Debug)]
pub struct RedbStorage {
    db: Database,
    path: PathBuf,
    sync: Sync,
    retention: Retention,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: HashMap<String, Topic, foldhash::fast::RandomState>,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    next_stream: u32,
    next_chunk: u64,
    next_segment: u64,
    /// Live tail segments: id → (bytes counted, time of its newest entry).
    segments: BTreeMap<u64, (u64, Millis)>,
    tail_bytes: u64,
    /// Bytes counted against `max_bytes` (chunks, streams, tail).
    bytes: u64,
    dropped: u64,
    expired: u64,
    /// Nothing before this is answered (set by [`Storage::prune`]).
    horizon: Millis,
    /// Set when a commit failed: memory no longer matches the file, so nothing more is
    /// written (a restart reads the file again).
    failed: Option<String>,
    /// Commits since the last fsync (with [`Sync::Periodic`]).
    unsynced: bool,
}

#[derive(Debug)]
struct Topic {
    raw: u32,
    fields: Vec<(String, u32)>,
    last_t: Millis,
}

#[derive(Debug)]
struct Stream {
    /// Its row's key: `topic` or `topic\0field`.
    key: String,
    closed_through: u64,
    count: u64,
    first: Millis,
    last: Millis,
    open: Option<Open>,
}

#[derive(Debug, Clone)]
struct Open {
    first_segment: u64,
    header: Header,
    body: Vec<u8>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn stream_record(s: &Stream, id: u32) -> [u8; 36] {
    let mut r = [0u8; 36];
    r[0..4].copy_from_slice(&id.to_le_bytes());
    r[4..12].copy_from_slice(&s.closed_through.to_le_bytes());
    r[12..20].copy_from_slice(&s.count.to_le_bytes());
    r[20..28].copy_from_slice(&s.first.to_le_bytes());
    r[28..36].copy_from_slice(&s.last.to_le_bytes());
    r
}

fn read_stream_record(b: &[u8]) -> Option<(u32, u64, u64, u64, u64)> {
    let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    Some((
        u32::from_le_bytes(b.get(0..4)?.try_into().ok()?),
        u64_at(4)?,
        u64_at(12)?,
        u64_at(20)?,
        u64_at(28)?,
    ))
}

impl RedbStorage {
    /// Opens (or creates) `dir/data.redb` and rebuilds what was open.
    pub fn open(dir: &Path, sync: Sync, retention: Retention) -> Result<Self, DataError> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::Database {
            path: dir.to_owned(),
            detail: format!("cannot create the data directory: {e}"),
        })?;
        let path = dir.join(FILE_NAME);
        let old = dir.join(OLD_FILE_NAME);
        if !path.exists() && old.exists() {
            std::fs::rename(&old, &path).map_err(|e| DataError::Database {
                path: old.clone(),
                detail: format!("cannot rename it to {FILE_NAME}: {e}"),
            })?;
        }
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| DataError::db(&path, e))?;
        let inner = load(&db, &path)?;
        Ok(Self {
            db,
            path,
            sync,
            retention,
            inner: Mutex::new(inner),
        })
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<redb::Error>) -> DataError {
        DataError::db(&self.path, e.into())
    }

    /// Locks the state, refusing once a commit failed.
    fn state(&self) -> Result<MutexGuard<'_, Inner>, DataError> {
        let g = lock(&self.inner);
        match &g.failed {
            Some(detail) => Err(DataError::Database {
                path: self.path.clone(),
                detail: format!(
                    "an earlier write failed ({detail}); restart Kite to read the file again"
                ),
            }),
            None => Ok(g),
        }
    }

    fn begin(&self, g: &mut Inner, force_sync: bool) -> Result<WriteTransaction, DataError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let fsync = self.sync == Sync::Always || force_sync;
        let durability = if fsync {
            Durability::Immediate
        } else {
            Durability::None
        };
        g.unsynced = !fsync;
        txn.set_durability(durability)
            .map_err(|e| self.err(redb::Error::Io(std::io::Error::other(e.to_string()))))?;
        Ok(txn)
    }

    /// A read transaction and copies of the open chunks of `streams`, taken together so that
    /// a chunk closing meanwhile is seen once.
    fn snapshot(
        &self,
        g: &Inner,
        streams: &[u32],
    ) -> Result<(ReadTransaction, Vec<Option<Open>>), DataError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let open = streams
            .iter()
            .map(|id| g.streams.get(id).and_then(|s| s.open.clone()))
            .collect();
        Ok((read, open))
    }

    /// Reads a chunk; a malformed one is an error naming it.
    fn chunk(&self, chunks: &ReadOnlyTable<u64, &[u8]>, id: u64) -> Result<Bytes, DataError> {
        let row = chunks.get(id).map_err(|e| self.err(e))?;
        let bytes = row.map(|r| Bytes::copy_from_slice(r.value()));
        match bytes {
            Some(b) if b.len() >= chunk::HEADER => Ok(b),
            _ => Err(DataError::Corrupt {
                path: self.path.clone(),
                what: format!("chunk {id}"),
            }),
        }
    }

    /// Every chunk of `stream` overlapping `span`, oldest first (or newest first), then its
    /// open chunk (or first): `each(header, whole chunk, body offset)` until it returns false.
    fn walk(
        &self,
        read: &ReadTransaction,
        stream: u32,
        open: Option<&Open>,
        span: Span,
        newest_first: bool,
        each: &mut dyn FnMut(Header, Bytes) -> Result<bool, DataError>,
    ) -> Result<(), DataError> {
        let index = read.open_table(INDEX).map_err(|e| self.err(e))?;
        let chunks = read.open_table(CHUNKS).map_err(|e| self.err(e))?;
        let open_chunk = open.filter(|o| o.header.count > 0).map(|o| {
            let mut b = Vec::with_capacity(chunk::HEADER + o.body.len());
            o.header.write(&mut b);
            b.extend_from_slice(&o.body);
            (o.header, Bytes::from(b))
        });
        let open_in_span = open_chunk.filter(|(h, _)| h.last >= span.from && h.first <= span.to);
        if newest_first
            && let Some((h, b)) = open_in_span.clone()
            && !each(h, b)?
        {
            return Ok(());
        }
        let range = index
            .range((stream, span.from, 0)..=(stream, u64::MAX, u64::MAX))
            .map_err(|e| self.err(e))?;
        let mut visit = |row: IndexRow<'_>| -> Result<Option<bool>, DataError> {
            let (key, first) = row.map_err(|e| self.err(e))?;
            let (_, _, id) = key.value();
            if first.value() > span.to {
                // Oldest first: every later chunk starts later still.
                return Ok(if newest_first { None } else { Some(false) });
            }
            let bytes = self.chunk(&chunks, id)?;
            let header = Header::read(&bytes).ok_or_else(|| DataError::Corrupt {
                path: self.path.clone(),
                what: format!("chunk {id}"),
            })?;
            Ok(Some(each(header, bytes)?))
        };
        if newest_first {
            for row in range.rev() {
                if visit(row)? == Some(false) {
                    return Ok(());
                }
            }
        } else {
            for row in range {
                if visit(row)? == Some(false) {
                    return Ok(());
                }
            }
            if let Some((h, b)) = open_in_span {
                each(h, b)?;
            }
        }
        Ok(())
    }

    /// The topics matching `filter` (a name or an MQTT filter), sorted by name.
    fn matching(g: &Inner, filter: &str) -> Vec<String> {
        let mut names: Vec<String> = if filter.contains(['+', '#']) {
            g.topics
                .keys()
                .filter(|t| kite_mqtt::topic::matches(filter, t))
                .cloned()
                .collect()
        } else {
            g.topics
                .get_key_value(filter)
                .map(|(k, _)| k.clone())
                .into_iter()
                .collect()
        };
        names.sort_unstable();
        names
    }
}

/// Reads the file: counters, streams, and the open chunks from the tail.
fn load(db: &Database, path: &Path) -> Result<Inner, DataError> {
    let e = |x: redb::Error| DataError::db(path, x);
    let corrupt = |what: String| DataError::Corrupt {
        path: path.to_owned(),
        what,
    };
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
                return Err(DataError::Format {
                    path: path.to_owned(),
                    found,
                    expected: FORMAT,
                });
            }
        }
        txn.open_table(STREAMS).map_err(|x| e(x.into()))?;
        txn.open_table(CHUNKS).map_err(|x| e(x.into()))?;
        txn.open_table(INDEX).map_err(|x| e(x.into()))?;
        txn.open_table(AGE).map_err(|x| e(x.into()))?;
        txn.open_table(TAIL).map_err(|x| e(x.into()))?;
        txn.open_table(DEVICES).map_err(|x| e(x.into()))?;
        txn.open_table(ALARM_RULES).map_err(|x| e(x.into()))?;
        txn.open_table(ALARMS).map_err(|x| e(x.into()))?;
        txn.open_table(DASHBOARDS).map_err(|x| e(x.into()))?;
    }
    txn.commit().map_err(|x| e(x.into()))?;

    let read = db.begin_read().map_err(|x| e(x.into()))?;
    let meta = read.open_table(META).map_err(|x| e(x.into()))?;
    let get = |k: &str| -> Result<u64, DataError> {
        Ok(meta
            .get(k)
            .map_err(|x| e(x.into()))?
            .map_or(0, |v| v.value()))
    };
    let mut g = Inner {
        next_stream: u32::try_from(get("next_stream")?)
            .map_err(|_| corrupt("meta next_stream".into()))?,
        next_chunk: get("next_chunk")?,
        // Segment 0 would read as "closed through" in a stream that never closed a chunk.
        next_segment: get("next_segment")?.max(1),
        dropped: get("dropped")?,
        expired: get("expired")?,
        bytes: get("bytes")?,
        horizon: get("horizon")?,
        ..Inner::default()
    };
    let streams = read.open_table(STREAMS).map_err(|x| e(x.into()))?;
    let mut fields: Vec<(String, String, u32)> = Vec::new();
    for row in streams.iter().map_err(|x| e(x.into()))? {
        let (k, v) = row.map_err(|x| e(x.into()))?;
        let key = k.value().to_owned();
        let (id, closed_through, count, first, last) =
            read_stream_record(v.value()).ok_or_else(|| corrupt(format!("stream {key:?}")))?;
        match key.split_once('\0') {
            None => {
                g.topics.insert(
                    key.clone(),
                    Topic {
                        raw: id,
                        fields: Vec::new(),
                        last_t: last,
                    },
                );
            }
            Some((topic, field)) => fields.push((topic.to_owned(), field.to_owned(), id)),
        }
        g.streams.insert(
            id,
            Stream {
                key,
                closed_through,
                count,
                first,
                last,
                open: None,
            },
        );
    }
    fields.sort_by_key(|f| f.2);
    for (topic, field, id) in fields {
        match g.topics.get_mut(&topic) {
            Some(t) => t.fields.push((field, id)),
            None => {
                return Err(corrupt(format!(
                    "stream {topic:?} field {field:?} without its topic"
                )));
            }
        }
    }
    // The open chunks, from the tail.
    let tail = read.open_table(TAIL).map_err(|x| e(x.into()))?;
    for row in tail.iter().map_err(|x| e(x.into()))? {
        let (k, v) = row.map_err(|x| e(x.into()))?;
        let seg = k.value();
        let b = v.value();
        let mut at = 0;
        let mut newest = 0;
        while at < b.len() {
            let entry = (|| {
                let sid = u32::try_from(chunk::get_varint(b, &mut at)?).ok()?;
                let t = chunk::get_varint(b, &mut at)?;
                let len = usize::try_from(chunk::get_varint(b, &mut at)?).ok()?;
                let body = b.get(at..at.checked_add(len)?)?;
                at += len;
                Some((sid, t, body))
            })();
            let (sid, t, body) = entry.ok_or_else(|| corrupt(format!("tail segment {seg}")))?;
            newest = newest.max(t);
            // A stream removed since, or an entry already in a closed chunk: skip.
            if let Some(s) = g.streams.get_mut(&sid)
                && seg > s.closed_through
            {
                append_open(s, sid, seg, t, body);
            }
        }
        g.segments.insert(seg, (b.len() as u64 + ROW, newest));
        g.tail_bytes += b.len() as u64 + ROW;
    }
    let lasts: Vec<(String, Millis)> = g
        .topics
        .iter()
        .map(|(name, t)| {
            let last = std::iter::once(t.raw)
                .chain(t.fields.iter().map(|f| f.1))
                .filter_map(|id| g.streams.get(&id))
                .map(|s| {
                    s.open
                        .as_ref()
                        .map_or(s.last, |o| o.header.last.max(s.last))
                })
                .max()
                .unwrap_or(0);
            (name.clone(), last)
        })
        .collect();
    for (name, last) in lasts {
        if let Some(t) = g.topics.get_mut(&name) {
            t.last_t = last;
        }
    }
    Ok(g)
}

/// Adds an entry (its time `t`, its body without time) to the stream's open chunk.
fn append_open(s: &mut Stream, id: u32, seg: u64, t: Millis, body: &[u8]) {
    let open = s.open.get_or_insert_with(|| Open {
        first_segment: seg,
        header: Header {
            stream: id,
            first: t,
            last: t,
            count: 0,
        },
        body: Vec::with_capacity(256),
    });
    let dt = t.saturating_sub(open.header.last);
    chunk::put_varint(&mut open.body, dt);
    open.body.extend_from_slice(body);
    open.header.last = t;
    open.header.count += 1;
}

/// One write transaction's tables.
struct Tables<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    streams: redb::Table<'t, &'static str, &'static [u8]>,
    chunks: redb::Table<'t, u64, &'static [u8]>,
    index: redb::Table<'t, (u32, u64, u64), u64>,
    age: redb::Table<'t, (u64, u64), ()>,
    tail: redb::Table<'t, u64, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            meta: txn.open_table(META)?,
            streams: txn.open_table(STREAMS)?,
            chunks: txn.open_table(CHUNKS)?,
            index: txn.open_table(INDEX)?,
            age: txn.open_table(AGE)?,
            tail: txn.open_table(TAIL)?,
        })
    }
}

impl Inner {
    /// A new stream for `key`.
    fn add_stream(&mut self, key: String) -> u32 {
        let id = self.next_stream;
        self.next_stream += 1;
        self.bytes += key.len() as u64 + 36 + ROW;
        self.streams.insert(
            id,
            Stream {
                key,
                closed_through: 0,
                count: 0,
                first: 0,
                last: 0,
                open: None,
            },
        );
        id
    }

    /// Closes the stream's open chunk into a row.
    fn close(&mut self, t: &mut Tables<'_>, id: u32, seg: u64) -> Result<(), redb::Error> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let Some(open) = s.open.take() else {
            return Ok(());
        };
        let chunk_id = self.next_chunk;
        self.next_chunk += 1;
        let mut value = Vec::with_capacity(chunk::HEADER + open.body.len());
        open.header.write(&mut value);
        value.extend_from_slice(&open.body);
        t.chunks.insert(chunk_id, value.as_slice())?;
        t.index
            .insert((id, open.header.last, chunk_id), open.header.first)?;
        t.age.insert((open.header.last, chunk_id), ())?;
        if s.count == 0 {
            s.first = open.header.first;
        }
        s.count += u64::from(open.header.count);
        s.last = open.header.last;
        s.closed_through = seg;
        t.streams
            .insert(s.key.as_str(), stream_record(s, id).as_slice())?;
        self.bytes += value.len() as u64 + CHUNK_ROWS;
        Ok(())
    }

    /// Removes the oldest chunk (by its last time) if it ends before `before`; the messages
    /// removed (0 for a field's chunk), or `None` when there is none.
    fn evict_oldest(
        &mut self,
        t: &mut Tables<'_>,
        before: Option<Millis>,
    ) -> Result<Option<u64>, redb::Error> {
        let oldest = t.age.first()?.map(|(k, _)| k.value());
        let Some((last, chunk_id)) = oldest else {
            return Ok(None);
        };
        if before.is_some_and(|b| last >= b) {
            return Ok(None);
        }
        t.age.remove((last, chunk_id))?;
        let value = t.chunks.remove(chunk_id)?.map(|v| v.value().to_vec());
        let Some(value) = value else {
            return Ok(Some(0));
        };
        let Some(h) = Header::read(&value) else {
            return Ok(Some(0));
        };
        t.index.remove((h.stream, h.last, chunk_id))?;
        self.bytes = self.bytes.saturating_sub(value.len() as u64 + CHUNK_ROWS);
        let next_first = t
            .index
            .range((h.stream, 0, 0)..=(h.stream, u64::MAX, u64::MAX))?
            .next()
            .transpose()?
            .map(|(_, first)| first.value());
        // Messages are counted; a field's numbers go with them, uncounted.
        let mut messages = 0;
        if let Some(s) = self.streams.get_mut(&h.stream) {
            if !s.key.contains('\0') {
                messages = u64::from(h.count);
            }
            s.count = s.count.saturating_sub(u64::from(h.count));
            match next_first {
                Some(first) => s.first = first,
                None => {
                    s.count = 0;
                    s.first = 0;
                    s.last = 0;
                }
            }
            if s.count == 0 && s.open.is_none() {
                self.remove_stream(t, h.stream)?;
            } else if let Some(s) = self.streams.get(&h.stream) {
                t.streams
                    .insert(s.key.as_str(), stream_record(s, h.stream).as_slice())?;
            }
        }
        Ok(Some(messages))
    }

    /// Forgets an empty stream (and its topic, once the topic has no stream left).
    fn remove_stream(&mut self, t: &mut Tables<'_>, id: u32) -> Result<(), redb::Error> {
        let Some(s) = self.streams.remove(&id) else {
            return Ok(());
        };
        t.streams.remove(s.key.as_str())?;
        self.bytes = self.bytes.saturating_sub(s.key.len() as u64 + 36 + ROW);
        let topic = s.key.split('\0').next().unwrap_or_default().to_owned();
        let empty_topic = match self.topics.get_mut(&topic) {
            Some(tp) => {
                tp.fields.retain(|f| f.1 != id);
                let raw_gone = tp.raw == id || !self.streams.contains_key(&tp.raw);
                raw_gone && tp.fields.is_empty()
            }
            None => false,
        };
        if empty_topic {
            self.topics.remove(&topic);
        }
        Ok(())
    }

    /// Deletes the tail segments no open chunk needs.
    fn trim_tail(&mut self, t: &mut Tables<'_>) -> Result<(), redb::Error> {
        let horizon = self
            .streams
            .values()
            .filter_map(|s| s.open.as_ref().map(|o| o.first_segment))
            .min()
            .unwrap_or(self.next_segment);
        while let Some((&seg, &(bytes, _))) = self.segments.first_key_value() {
            if seg >= horizon {
                break;
            }
            t.tail.remove(seg)?;
            self.segments.remove(&seg);
            self.tail_bytes = self.tail_bytes.saturating_sub(bytes);
            self.bytes = self.bytes.saturating_sub(bytes);
        }
        Ok(())
    }

    fn save_meta(&self, t: &mut Tables<'_>) -> Result<(), redb::Error> {
        for (k, v) in [
            ("next_stream", u64::from(self.next_stream)),
            ("next_chunk", self.next_chunk),
            ("next_segment", self.next_segment),
            ("dropped", self.dropped),
            ("expired", self.expired),
            ("bytes", self.bytes),
            ("horizon", self.horizon),
        ] {
            t.meta.insert(k, v)?;
        }
        Ok(())
    }

    fn usage(&self) -> Usage {
        let messages = self
            .topics
            .values()
            .filter_map(|t| self.streams.get(&t.raw))
            .map(|s| s.count + s.open.as_ref().map_or(0, |o| u64::from(o.header.count)))
            .sum();
        Usage {
            bytes: self.bytes,
            topics: self.topics.len() as u64,
            messages,
            dropped: self.dropped,
            expired: self.expired,
        }
    }
}

impl Storage for RedbStorage {
    fn record(&self, batch: &[Record]) -> Result<(), DataError> {
        let mut guard = self.state()?;
        let g = &mut *guard;
        let seg = g.next_segment;
        g.next_segment += 1;
        let mut segment = Vec::with_capacity(batch.len() * 48);
        let mut body = Vec::with_capacity(128);
        let mut nums = Vec::new();
        let mut targets: Vec<(u32, f64)> = Vec::new();
        let mut fresh = Vec::new();
        let mut new_streams: Vec<u32> = Vec::new();
        let mut full: Vec<u32> = Vec::new();
        let mut newest = 0;
        for r in batch {
            if r.topic.is_empty() || r.topic.contains('\0') {
                continue;
            }
            // One lookup for a known topic: its stream, its time, the fields it has.
            targets.clear();
            fresh.clear();
            nums.clear();
            numbers::numbers(&r.message.payload, &mut nums);
            let known = g.topics.get_mut(r.topic.as_str()).map(|topic| {
                let t = r.message.t.max(topic.last_t);
                topic.last_t = t;
                for (field, v) in nums.drain(..) {
                    match topic.fields.iter().find(|f| f.0 == field) {
                        Some(f) => targets.push((f.1, v)),
                        None => fresh.push((field, v)),
                    }
                }
                (topic.raw, t, topic.fields.len())
            });
            let (raw, t, mut field_count) = match known {
                Some(k) => k,
                None => {
                    let raw = g.add_stream(r.topic.clone());
                    new_streams.push(raw);
                    g.topics.insert(
                        r.topic.clone(),
                        Topic {
                            raw,
                            fields: Vec::new(),
                            last_t: r.message.t,
                        },
                    );
                    fresh.append(&mut nums);
                    (raw, r.message.t, 0)
                }
            };
            newest = newest.max(t);
            // New fields' streams, within the per-topic bound.
            for (field, v) in fresh.drain(..) {
                if field_count >= MAX_FIELDS_PER_TOPIC {
                    continue;
                }
                let same = g
                    .topics
                    .get(r.topic.as_str())
                    .and_then(|tp| tp.fields.iter().find(|f| f.0 == field).map(|f| f.1));
                if let Some(id) = same {
                    // The same field twice in one payload: one stream.
                    targets.push((id, v));
                    continue;
                }
                let id = g.add_stream(format!("{}\0{field}", r.topic));
                new_streams.push(id);
                if let Some(tp) = g.topics.get_mut(r.topic.as_str()) {
                    tp.fields.push((field, id));
                }
                field_count += 1;
                targets.push((id, v));
            }
            body.clear();
            chunk::message_body(&r.message, &mut body);
            let mut add = |id: u32, body: &[u8], g: &mut Inner| {
                chunk::put_varint(&mut segment, u64::from(id));
                chunk::put_varint(&mut segment, t);
                chunk::put_varint(&mut segment, body.len() as u64);
                segment.extend_from_slice(body);
                if let Some(s) = g.streams.get_mut(&id) {
                    append_open(s, id, seg, t, body);
                    if s.open
                        .as_ref()
                        .is_some_and(|o| o.body.len() >= chunk::TARGET)
                    {
                        full.push(id);
                    }
                }
            };
            add(raw, &body, g);
            for &(id, v) in &targets {
                add(id, &chunk::number_body(v), g);
            }
        }
        let seg_bytes = segment.len() as u64 + ROW;
        g.segments.insert(seg, (seg_bytes, newest));
        g.tail_bytes += seg_bytes;
        g.bytes += seg_bytes;
        // A quiet stream's open chunk holds every segment after its first: the tail is kept
        // to an eighth of max_bytes, so that it never forces the history out.
        let tail_max = TAIL_MAX.min(self.retention.max_bytes / 8);
        let pressure = g.tail_bytes > tail_max
            || g.segments
                .first_key_value()
                .is_some_and(|(_, (_, t))| newest.saturating_sub(*t) > TAIL_AGE);

        let result = (|| -> Result<(), redb::Error> {
            let txn = self
                .begin(g, false)
                .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
            {
                let mut t = Tables::open(&txn)?;
                t.tail.insert(seg, segment.as_slice())?;
                for id in &new_streams {
                    if let Some(s) = g.streams.get(id) {
                        t.streams
                            .insert(s.key.as_str(), stream_record(s, *id).as_slice())?;
                    }
                }
                let closing: Vec<u32> = if pressure {
                    g.streams
                        .iter()
                        .filter(|(_, s)| s.open.is_some())
                        .map(|(id, _)| *id)
                        .collect()
                } else {
                    full
                };
                for id in closing {
                    g.close(&mut t, id, seg)?;
                }
                g.trim_tail(&mut t)?;
                // Within max_bytes: the oldest chunks go first; if the tail alone is over,
                // its chunks are closed so that they can go too.
                let mut closed_all = pressure;
                while g.bytes > self.retention.max_bytes {
                    match g.evict_oldest(&mut t, None)? {
                        Some(n) => g.dropped += n,
                        None if !closed_all => {
                            let open: Vec<u32> = g
                                .streams
                                .iter()
                                .filter(|(_, s)| s.open.is_some())
                                .map(|(id, _)| *id)
                                .collect();
                            for id in open {
                                g.close(&mut t, id, seg)?;
                            }
                            g.trim_tail(&mut t)?;
                            closed_all = true;
                        }
                        None => break,
                    }
                }
                g.save_meta(&mut t)?;
            }
            txn.commit()?;
            Ok(())
        })();
        result.map_err(|e| {
            let err = self.err(e);
            g.failed = Some(err.to_string());
            err
        })
    }

    fn topics(&self) -> Result<Vec<TopicInfo>, DataError> {
        let g = lock(&self.inner);
        let mut out: Vec<TopicInfo> = g
            .topics
            .iter()
            .filter_map(|(name, t)| {
                let s = g.streams.get(&t.raw)?;
                let open = s.open.as_ref().map(|o| o.header);
                let count = s.count + open.map_or(0, |h| u64::from(h.count));
                if count == 0 {
                    return None;
                }
                let first = if s.count > 0 {
                    s.first
                } else {
                    open.map_or(0, |h| h.first)
                };
                let last = open.map_or(s.last, |h| h.last);
                Some(TopicInfo {
                    topic: name.clone(),
                    count,
                    first: first.max(g.horizon),
                    last,
                    fields: t.fields.iter().map(|f| f.0.clone()).collect(),
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        Ok(out)
    }

    fn messages(&self, topic: &str, span: Span, limit: usize) -> Result<Page, DataError> {
        let (read, open, stream, span) = {
            let g = lock(&self.inner);
            let Some(t) = g.topics.get(topic) else {
                return Ok(Page {
                    messages: Vec::new(),
                    more: false,
                });
            };
            let (read, mut open) = self.snapshot(&g, &[t.raw])?;
            let span = Span {
                from: span.from.max(g.horizon),
                ..span
            };
            (read, open.pop().flatten(), t.raw, span)
        };
        let mut messages = Vec::new();
        let mut more = false;
        if span.from > span.to {
            return Ok(Page { messages, more });
        }
        let path = &self.path;
        self.walk(&read, stream, open.as_ref(), span, true, &mut |h, bytes| {
            let mut entries = Entries::new(&bytes[chunk::HEADER..], h.first);
            let mut in_chunk = Vec::new();
            while let Some(m) = entries.next_message(&bytes) {
                if span.contains(m.t) {
                    in_chunk.push(m);
                }
            }
            if entries.broken() {
                return Err(DataError::Corrupt {
                    path: path.clone(),
                    what: format!("a chunk of {topic:?}"),
                });
            }
            for m in in_chunk.into_iter().rev() {
                if messages.len() == limit {
                    more = true;
                    return Ok(false);
                }
                messages.push(m);
            }
            Ok(true)
        })?;
        Ok(Page { messages, more })
    }

    fn series(
        &self,
        filter: &str,
        field: Option<&str>,
        span: Span,
        points: usize,
    ) -> Result<Vec<Series>, DataError> {
        if points == 0 || points > MAX_POINTS {
            return Err(QueryError::Points(points).into());
        }
        let field = field.unwrap_or("");
        numbers::check_pointer(field).map_err(QueryError::Field)?;
        let (read, wanted, span) = {
            let g = lock(&self.inner);
            let names = Self::matching(&g, filter);
            let mut wanted: Vec<(String, u32)> = Vec::new();
            let mut known: Vec<&str> = Vec::new();
            for name in &names {
                let Some(t) = g.topics.get(name) else {
                    continue;
                };
                match t.fields.iter().find(|f| f.0 == field) {
                    Some(f) => wanted.push((name.clone(), f.1)),
                    None => known.extend(t.fields.iter().map(|f| f.0.as_str())),
                }
            }
            if wanted.is_empty() && !names.is_empty() {
                known.sort_unstable();
                known.dedup();
                let known = if known.is_empty() {
                    "none (no payload was a number or JSON with numbers)".to_owned()
                } else {
                    known
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(QueryError::UnknownField {
                    field: field.to_owned(),
                    topic: filter.to_owned(),
                    known,
                }
                .into());
            }
            let ids: Vec<u32> = wanted.iter().map(|w| w.1).collect();
            let (read, open) = self.snapshot(&g, &ids)?;
            let span = Span {
                from: span.from.max(g.horizon),
                ..span
            };
            (read, wanted.into_iter().zip(open).collect::<Vec<_>>(), span)
        };
        let mut out = Vec::with_capacity(wanted.len());
        for ((topic, id), open) in wanted {
            if span.from > span.to {
                break;
            }
            let mut m4 = M4::new(span.from, span.to, points);
            let path = &self.path;
            self.walk(&read, id, open.as_ref(), span, false, &mut |h, bytes| {
                let mut entries = Entries::new(&bytes[chunk::HEADER..], h.first);
                while let Some((t, v)) = entries.next_number() {
                    if t > span.to {
                        return Ok(false);
                    }
                    if t >= span.from {
                        m4.add(t, v);
                    }
                }
                if entries.broken() {
                    return Err(DataError::Corrupt {
                        path: path.clone(),
                        what: format!("a chunk of {topic:?}"),
                    });
                }
                Ok(true)
            })?;
            out.push(Series {
                topic,
                field: field.to_owned(),
                buckets: m4.finish(),
            });
        }
        Ok(out)
    }

    fn export(
        &self,
        filter: &str,
        span: Span,
        each: &mut dyn FnMut(&str, &Stored) -> bool,
    ) -> Result<u64, DataError> {
        let (read, wanted, span) = {
            let g = lock(&self.inner);
            let names = Self::matching(&g, filter);
            let ids: Vec<u32> = names
                .iter()
                .filter_map(|n| g.topics.get(n).map(|t| t.raw))
                .collect();
            let (read, open) = self.snapshot(&g, &ids)?;
            let span = Span {
                from: span.from.max(g.horizon),
                ..span
            };
            (
                read,
                names.into_iter().zip(ids).zip(open).collect::<Vec<_>>(),
                span,
            )
        };
        let mut n = 0u64;
        let mut stopped = false;
        for ((topic, id), open) in wanted {
            if stopped || span.from > span.to {
                break;
            }
            let path = &self.path;
            self.walk(&read, id, open.as_ref(), span, false, &mut |h, bytes| {
                let mut entries = Entries::new(&bytes[chunk::HEADER..], h.first);
                while let Some(m) = entries.next_message(&bytes) {
                    if m.t > span.to {
                        return Ok(false);
                    }
                    if m.t >= span.from {
                        n += 1;
                        if !each(&topic, &m) {
                            stopped = true;
                            return Ok(false);
                        }
                    }
                }
                if entries.broken() {
                    return Err(DataError::Corrupt {
                        path: path.clone(),
                        what: format!("a chunk of {topic:?}"),
                    });
                }
                Ok(true)
            })?;
        }
        Ok(n)
    }

    fn prune(&self, now: Millis) -> Result<Usage, DataError> {
        let mut guard = self.state()?;
        let g = &mut *guard;
        let Some(max_age) = self.retention.max_age else {
            if g.unsynced {
                self.sync_now(g)?;
            }
            return Ok(g.usage());
        };
        let cutoff = now.saturating_sub(max_age);
        let result = (|| -> Result<(), redb::Error> {
            let txn = self
                .begin(g, true)
                .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
            {
                let mut t = Tables::open(&txn)?;
                while let Some(n) = g.evict_oldest(&mut t, Some(cutoff))? {
                    g.expired += n;
                }
                g.horizon = g.horizon.max(cutoff);
                g.save_meta(&mut t)?;
            }
            txn.commit()?;
            Ok(())
        })();
        result.map_err(|e| {
            let err = self.err(e);
            g.failed = Some(err.to_string());
            err
        })?;
        Ok(g.usage())
    }

    fn usage(&self) -> Usage {
        lock(&self.inner).usage()
    }

    fn devices(&self) -> Result<Vec<Device>, DataError> {
        self.read_json(DEVICES, "device")
    }

    fn save_devices(&self, changed: &[Device], removed: &[String]) -> Result<(), DataError> {
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut table = txn.open_table(DEVICES).map_err(|e| self.err(e))?;
            for id in removed {
                table.remove(id.as_str()).map_err(|e| self.err(e))?;
            }
            for d in changed {
                let bytes = self.encode(&d.id, d)?;
                table
                    .insert(d.id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    fn alarm_rules(&self) -> Result<Vec<AlarmRule>, DataError> {
        self.read_json(ALARM_RULES, "alarm rule")
    }

    fn save_alarm_rule(&self, rule: &AlarmRule) -> Result<(), DataError> {
        self.put_json(ALARM_RULES, &rule.name, rule)
    }

    fn delete_alarm_rule(&self, name: &str) -> Result<bool, DataError> {
        self.remove_key(ALARM_RULES, name)
    }

    fn alarms(&self) -> Result<Vec<Alarm>, DataError> {
        self.read_json(ALARMS, "alarm")
    }

    fn save_alarms(&self, changed: &[Alarm], removed: &[u64]) -> Result<(), DataError> {
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut table = txn.open_table(ALARMS).map_err(|e| self.err(e))?;
            for a in changed {
                let bytes = self.encode(&a.id.to_string(), a)?;
                table
                    .insert(a.id, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for id in removed {
                table.remove(*id).map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    fn dashboards(&self) -> Result<Vec<Dashboard>, DataError> {
        self.read_json(DASHBOARDS, "dashboard")
    }

    fn dashboard(&self, id: &str) -> Result<Option<Dashboard>, DataError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(DASHBOARDS).map_err(|e| self.err(e))?;
        let Some(row) = table.get(id).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(row.value())
            .map(Some)
            .map_err(|e| DataError::Corrupt {
                path: self.path.clone(),
                what: format!("dashboard {id:?} ({e})"),
            })
    }

    fn save_dashboard(&self, dashboard: &Dashboard) -> Result<(), DataError> {
        self.put_json(DASHBOARDS, &dashboard.id, dashboard)
    }

    fn delete_dashboard(&self, id: &str) -> Result<bool, DataError> {
        self.remove_key(DASHBOARDS, id)
    }

    fn seed_dashboards(&self, examples: &[Dashboard]) -> Result<bool, DataError> {
        let mut seeded = false;
        self.write(|txn| {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            if meta
                .get("dashboards_seeded")
                .map_err(|e| self.err(e))?
                .is_some()
            {
                return Ok(());
            }
            meta.insert("dashboards_seeded", 1)
                .map_err(|e| self.err(e))?;
            let mut table = txn.open_table(DASHBOARDS).map_err(|e| self.err(e))?;
            for d in examples {
                let bytes = self.encode(&d.id, d)?;
                table
                    .insert(d.id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            seeded = true;
            Ok(())
        })?;
        Ok(seeded)
    }
}

impl RedbStorage {
    /// Keeps `value` as JSON under `key` in `def`, in a commit of its own.
    fn put_json(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), DataError> {
        self.write(|txn| {
            let mut table = txn.open_table(def).map_err(|e| self.err(e))?;
            let bytes = self.encode(key, value)?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    /// Removes `key` from `def`, in a commit of its own; whether it was there.
    fn remove_key(&self, def: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, DataError> {
        let mut found = false;
        self.write(|txn| {
            let mut table = txn.open_table(def).map_err(|e| self.err(e))?;
            found = table.remove(key).map_err(|e| self.err(e))?.is_some();
            Ok(())
        })?;
        Ok(found)
    }

    /// Every row of a table of JSON values.
    fn read_json<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
        &self,
        def: TableDefinition<K, &[u8]>,
        what: &str,
    ) -> Result<Vec<T>, DataError>
    where
        for<'a> K::SelfType<'a>: std::fmt::Debug,
    {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(def).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let value = serde_json::from_slice(v.value()).map_err(|e| DataError::Corrupt {
                path: self.path.clone(),
                what: format!("{what} {:?} ({e})", k.value()),
            })?;
            out.push(value);
        }
        Ok(out)
    }

    /// `value` as JSON (`key` names it in the error).
    fn encode(&self, key: &str, value: &impl serde::Serialize) -> Result<Vec<u8>, DataError> {
        serde_json::to_vec(value).map_err(|e| DataError::Database {
            path: self.path.clone(),
            detail: format!("cannot encode {key:?}: {e}"),
        })
    }

    /// One write transaction around `f`, committed (fsynced with [`Sync::Always`]).
    fn write(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let mut guard = self.state()?;
        let txn = self.begin(&mut guard, false)?;
        f(&txn)?;
        txn.commit().map_err(|e| self.err(e))
    }
}

impl RedbStorage {
    /// An empty commit with fsync (what [`Sync::Periodic`] does once a second).
    fn sync_now(&self, g: &mut Inner) -> Result<(), DataError> {
        let txn = self.begin(g, true)?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(())
    }
}
