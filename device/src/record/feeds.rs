//! Waiting on the recorder's feeds, either of which may be closed: a closed one never yields,
//! so the task's `select!` waits on the others.

use tokio::sync::broadcast;

use crate::media::{AccessUnit, AudioUnit, VideoFeed};

pub(super) async fn next_video(feed: &mut Option<VideoFeed>) -> Option<AccessUnit> {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn next_audio(
    feed: &mut Option<broadcast::Receiver<AudioUnit>>,
) -> Option<AudioUnit> {
    let Some(feed) = feed else {
        return std::future::pending().await;
    };
    loop {
        match feed.recv().await {
            Ok(unit) => return Some(unit),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}
