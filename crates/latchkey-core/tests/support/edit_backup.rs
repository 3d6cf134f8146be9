//! Rewrites a backup file as someone hiding their last actions would: this crate's
//! `backup.rs` and the black-box `tests/it/operations.rs` include it by path. The file's
//! layout is `latchkey-core/src/store/backup.rs`'s: a header line, length-prefixed key and
//! value frames, an empty key, the BLAKE3 of all that.

/// `file` rewritten without its newest audit event, its record count and checksum made
/// to match again: what someone hiding their last actions from a backup would write.
pub(crate) fn without_newest_event(file: &[u8]) -> Vec<u8> {
    let end = file.iter().position(|&b| b == b'\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(&file[..end]).unwrap();
    let mut frames = Vec::new();
    let mut at = end + 1;
    loop {
        let frame = |at: &mut usize| {
            let len = u32::from_be_bytes(file[*at..*at + 4].try_into().unwrap()) as usize;
            *at += 4 + len;
            file[*at - len..*at].to_vec()
        };
        let key = frame(&mut at);
        if key.is_empty() {
            break;
        }
        frames.push((key, frame(&mut at)));
    }
    let newest = frames
        .iter()
        .rposition(|(k, _)| k.starts_with(b"a:"))
        .unwrap();
    frames.remove(newest);
    header["records"] = (header["records"].as_u64().unwrap() - 1).into();
    let mut out = serde_json::to_vec(&header).unwrap();
    out.push(b'\n');
    for (key, value) in &frames {
        for part in [key, value] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    let digest = blake3::hash(&out);
    out.extend_from_slice(digest.as_bytes());
    out
}
