//! The cost of one delivery to one SSE stream — the event, the stream's
//! new id — with 1 and with 64 channels on the stream. The id covers every
//! channel, so it must not be rebuilt per delivery: the baseline measured
//! in the same run is how it was built before (every position encoded
//! again, JSON and base64, per delivery).
//!
//! Run: `cargo bench -p herald-edge --bench sse`.

use axum::extract::ws::Utf8Bytes;
use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herald_edge::transport::sse::put_event;
use herald_edge::{Cursor, Delivery, PushKind, StreamCursor};
use herald_protocol::StreamPosition;
use herald_protocol::channel::Channel;

fn channels(n: usize) -> Vec<Channel> {
    (0..n)
        .map(|i| Channel::new(&format!("chat:room-{i:04}")).unwrap())
        .collect()
}

/// A publication of `channel` at `offset`, as every stream shares it.
fn delivery(channel: &Channel, offset: u64) -> Delivery {
    let frame = format!(
        r#"{{"pub":{{"channel":"{channel}","offset":{offset},"epoch":"0123456789ab","data":{{"text":"hello, world"}},"ts":1764633600000}}}}"#
    );
    Delivery::new(
        Utf8Bytes::from(frame),
        PushKind::Pub,
        channel.clone(),
        Some(StreamPosition::new(offset, "0123456789ab")),
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_delivery");
    for n in [1usize, 64] {
        let channels = channels(n);
        // deliveries round the channels, each shared bytes made once
        let deliveries: Vec<Delivery> = (0..1024u64)
            .map(|i| delivery(&channels[i as usize % n], 1000 + i))
            .collect();
        for d in &deliveries {
            d.sse_event();
        }
        group.bench_with_input(BenchmarkId::new("incremental_id", n), &n, |b, _| {
            let mut cursor = StreamCursor::new(&channels);
            let mut buf = BytesMut::with_capacity(1 << 16);
            let mut i = 0;
            b.iter(|| {
                put_event(&mut cursor, &deliveries[i % deliveries.len()], &mut buf);
                i += 1;
                if buf.len() > 1 << 15 {
                    buf.clear();
                }
            });
        });
        group.bench_with_input(BenchmarkId::new("rebuilt_id_baseline", n), &n, |b, _| {
            let mut cursor = Cursor::default();
            for ch in &channels {
                cursor.set(ch, 1, "0123456789ab");
            }
            let mut buf = BytesMut::with_capacity(1 << 16);
            let mut i = 0;
            b.iter(|| {
                let d = &deliveries[i % deliveries.len()];
                buf.extend_from_slice(&d.sse_event());
                if let Some(p) = &d.position {
                    cursor.set(&d.channel, p.offset, &p.epoch);
                    buf.extend_from_slice(format!("id: {}\n\n", cursor.encode()).as_bytes());
                }
                i += 1;
                if buf.len() > 1 << 15 {
                    buf.clear();
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
