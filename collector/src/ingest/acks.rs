//! The application acks sent back to a device: the exact seq ranges stored and the
//! rejections with their reasons, split to fit the protocol's bounded lists.
use vigia_protocol::{Ack, DeviceId, Rejection, SeqRange, VERSION};

/// Compresses seqs into ranges and splits them (and the rejections) into acks that fit
/// the protocol's bounded lists.
pub fn build_acks(
    device: &DeviceId,
    instance: u64,
    mut seqs: Vec<u64>,
    rejected: Vec<Rejection>,
) -> Vec<Ack> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut ranges: Vec<SeqRange> = Vec::new();
    for s in seqs {
        match ranges.last_mut() {
            Some(r) if r.to.checked_add(1) == Some(s) => r.to = s,
            _ => ranges.push(SeqRange { from: s, to: s }),
        }
    }
    let mut out = Vec::new();
    let mut ranges = ranges.into_iter().peekable();
    let mut rejected = rejected.into_iter().peekable();
    while ranges.peek().is_some() || rejected.peek().is_some() {
        let mut ack = Ack {
            v: VERSION,
            device: device.clone(),
            instance,
            stored: heapless::Vec::new(),
            rejected: heapless::Vec::new(),
        };
        while !ack.stored.is_full() {
            match ranges.next() {
                Some(r) => {
                    let _ = ack.stored.push(r);
                }
                None => break,
            }
        }
        while !ack.rejected.is_full() {
            match rejected.next() {
                Some(r) => {
                    let _ = ack.rejected.push(r);
                }
                None => break,
            }
        }
        out.push(ack);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vigia_protocol::RejectReason;

    #[test]
    fn acks_compress_ranges_and_split_when_full() {
        let d = DeviceId::new("a").unwrap();
        let acks = build_acks(&d, 9, vec![5, 3, 4, 9, 3], vec![]);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].instance, 9);
        assert_eq!(
            acks[0].stored.as_slice(),
            &[SeqRange { from: 3, to: 5 }, SeqRange { from: 9, to: 9 }]
        );
        // 20 isolated seqs need two acks of at most 16 ranges.
        let seqs: Vec<u64> = (0..20).map(|i| i * 2).collect();
        let rej: Vec<Rejection> = (0..3)
            .map(|i| Rejection {
                seq: 100 + i,
                reason: RejectReason::Malformed,
            })
            .collect();
        let acks = build_acks(&d, 9, seqs.clone(), rej);
        assert_eq!(acks.len(), 2);
        for s in seqs {
            assert!(acks.iter().any(|a| a.covers(s)), "{s}");
        }
        assert!(acks.iter().any(|a| a.covers(101)));
        assert!(!acks.iter().any(|a| a.covers(1)));
        assert!(build_acks(&d, 9, vec![], vec![]).is_empty());
    }
}
