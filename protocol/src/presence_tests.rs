//! The ordering rule of presence messages, checked on examples and on random histories.

use proptest::prelude::*;

use super::*;

fn status(online: bool, epoch: u64, seq: u64) -> DeviceStatus {
    DeviceStatus {
        v: 1,
        device: DeviceId::parse("cam").unwrap(),
        online,
        epoch,
        seq,
        version: String::new(),
        capabilities: None,
    }
}

#[test]
fn a_late_will_from_an_old_epoch_does_not_mark_a_new_run_offline() {
    assert!(!status(false, 1, 1).supersedes(&status(true, 2, 1)));
    assert!(status(false, 2, 1).supersedes(&status(true, 2, 1)));
    assert!(status(true, 3, 1).supersedes(&status(false, 2, 1)));
    // Within a connection: updates (camera state changes) apply; nothing revives it once ended.
    assert!(status(true, 2, 1).supersedes(&status(true, 2, 1)));
    assert!(!status(true, 2, 1).supersedes(&status(false, 2, 1)));
}

#[test]
fn a_reconnect_within_a_run_is_online_again_after_its_own_will() {
    // The blip: connection 1's will arrives, then connection 2 announces itself.
    assert!(status(true, 5, 2).supersedes(&status(false, 5, 1)));
    // The will of connection 1, handed out late by the broker, does not undo connection 2.
    assert!(!status(false, 5, 1).supersedes(&status(true, 5, 2)));
}

#[test]
fn a_device_without_seq_still_orders_by_epoch() {
    let old: DeviceStatus =
        serde_json::from_str(r#"{"v":1,"device":"cam","online":true,"epoch":9}"#).unwrap();
    assert_eq!(old.seq, 0);
    assert!(status(false, 9, 0).supersedes(&old));
    assert!(!old.supersedes(&status(false, 9, 0)));
}

/// One device's life as the broker sees it: connections numbered in order, each announcing
/// itself online (possibly several times) and ending with its will.
fn messages() -> impl Strategy<Value = Vec<DeviceStatus>> {
    // (epoch, connections in it); each connection: its online announcements.
    prop::collection::vec((1u64..4, prop::collection::vec(1usize..3, 1..5)), 1..4).prop_map(
        |runs| {
            let mut epoch = 0;
            let mut out = Vec::new();
            for (gap, connections) in runs {
                epoch += gap;
                for (seq, announcements) in connections.into_iter().enumerate() {
                    let seq = seq as u64 + 1;
                    for _ in 0..announcements {
                        out.push(status(true, epoch, seq));
                    }
                    out.push(status(false, epoch, seq));
                }
            }
            out
        },
    )
}

/// What a receiver keeps after seeing `order` of `history` (indices), applying `supersedes`.
fn replay(history: &[DeviceStatus], order: &[usize]) -> DeviceStatus {
    let mut current = history[order[0]].clone();
    for &i in &order[1..] {
        if history[i].supersedes(&current) {
            current = history[i].clone();
        }
    }
    current
}

proptest! {
    /// Delivered in order, the receiver always ends on the last message sent: a device that
    /// reconnects is online again however many times it dropped before.
    #[test]
    fn in_order_delivery_ends_on_the_latest_message(history in messages(), cut in 0usize..64) {
        let end = 1 + cut % history.len();
        let prefix = &history[..end];
        let order: Vec<usize> = (0..prefix.len()).collect();
        prop_assert_eq!(replay(prefix, &order), prefix[end - 1].clone());
    }

    /// Whatever order the broker delivers in (wills handed out late, a cluster replaying
    /// retained messages), the receiver ends on the newest connection's state, and that is
    /// "offline" exactly when the newest connection's will was among the messages.
    #[test]
    fn any_delivery_order_ends_on_the_newest_connection(
        history in messages(),
        cut in 0usize..64,
        shuffle in prop::collection::vec(any::<prop::sample::Index>(), 64),
    ) {
        let end = 1 + cut % history.len();
        let prefix = &history[..end];
        let mut order: Vec<usize> = (0..prefix.len()).collect();
        for (i, pick) in shuffle.iter().enumerate().take(order.len()) {
            let j = pick.index(order.len());
            order.swap(i, j);
        }
        let kept = replay(prefix, &order);
        let newest = prefix.iter().map(DeviceStatus::connection).max().unwrap();
        prop_assert_eq!(kept.connection(), newest);
        let newest_ended = prefix.iter().any(|s| s.connection() == newest && !s.online);
        prop_assert_eq!(kept.online, !newest_ended);
    }

    /// A message is never both newer and older than another: the rule is a consistent order,
    /// so two gateways seeing the same messages agree.
    #[test]
    fn supersedes_is_antisymmetric_across_connections(
        a in (any::<bool>(), 0u64..4, 0u64..4),
        b in (any::<bool>(), 0u64..4, 0u64..4),
    ) {
        let (a, b) = (status(a.0, a.1, a.2), status(b.0, b.1, b.2));
        if a.connection() != b.connection() {
            prop_assert!(a.supersedes(&b) != b.supersedes(&a));
        }
    }
}
