//! Binary size. vault-rotator's release profile already strips; the OpenBao wheel ships `bao`
//! with debug info, so it is also measured after `strip` for a like-for-like figure.

use std::path::Path;
use std::process::Command;

use crate::agent::Bins;

#[derive(Debug, Clone)]
pub struct Sizes {
    pub rotator: u64,
    /// (as shipped, stripped) when installed; stripped is None when `strip` is unavailable.
    pub bao: Option<(u64, Option<u64>)>,
}

pub fn run(bins: &Bins, scratch: &Path) -> std::io::Result<Sizes> {
    let rotator = std::fs::metadata(&bins.rotator)?.len();
    let bao = match &bins.bao {
        Some(path) => Some((std::fs::metadata(path)?.len(), stripped_size(path, scratch))),
        None => None,
    };
    Ok(Sizes { rotator, bao })
}

fn stripped_size(bin: &Path, scratch: &Path) -> Option<u64> {
    let out = scratch.join("bao.stripped");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .ok()?
        .success();
    let size = ok.then(|| std::fs::metadata(&out).ok().map(|m| m.len()));
    let _ = std::fs::remove_file(&out);
    size.flatten()
}
