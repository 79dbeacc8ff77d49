//! One connection to a next hop: replies read within bounds and a timeout, commands and the
//! message body written, QUIT at the end.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::super::classify::Outcome;
use crate::fsutil::os_text;
use crate::proto::{Enhanced, Reply, ReplyLine, dot_stuff};

/// Bounds on what a next hop may send as one reply (RFC 5321 section 4.5.3.1.5 sets 512
/// octets per reply line; servers exceed it, so we allow more, but not without limit).
const MAX_REPLY_LINE: usize = 8192;
const MAX_REPLY_LINES: usize = 200;

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) struct Conn {
    pub(super) io: BufReader<Box<dyn Io>>,
    pub(super) timeout: Duration,
    pub(super) name: String,
    /// Replies read so far: a reused session whose transaction failed before any reply
    /// cannot have accepted the message.
    pub(super) replies: u64,
}

impl Conn {
    /// A connection over `io` (TCP, or the TLS stream after STARTTLS), named `name` in
    /// every reason it gives.
    pub(super) fn new(io: impl Io + 'static, timeout: Duration, name: String) -> Conn {
        Conn {
            io: BufReader::new(Box::new(io)),
            timeout,
            name,
            replies: 0,
        }
    }

    pub(super) async fn read_reply(&mut self, stage: &str) -> Result<Reply, Outcome> {
        let mut texts = Vec::new();
        loop {
            if texts.len() >= MAX_REPLY_LINES {
                return Err(Outcome::temporary(
                    Enhanced(4, 5, 0),
                    format!(
                        "host {} sent a reply of more than {MAX_REPLY_LINES} lines while {stage}",
                        self.name
                    ),
                ));
            }
            let raw = self.read_line(stage).await?;
            let line = String::from_utf8_lossy(&raw);
            let text = line.trim_end_matches(['\r', '\n']);
            let parsed = ReplyLine::parse(text).ok_or_else(|| {
                Outcome::temporary(
                    Enhanced(4, 5, 0),
                    format!(
                        "host {} sent a malformed reply while {stage}: {text:?}",
                        self.name
                    ),
                )
            })?;
            texts.push(parsed.text.to_string());
            if parsed.last {
                self.replies += 1;
                return Ok(Reply::from_lines(parsed.code, texts));
            }
        }
    }

    /// One reply line, within the command timeout and `MAX_REPLY_LINE` bytes: a next hop
    /// that never ends its line must not grow our memory.
    async fn read_line(&mut self, stage: &str) -> Result<Vec<u8>, Outcome> {
        let mut raw = Vec::new();
        let mut limited = (&mut self.io).take(MAX_REPLY_LINE as u64);
        let read = tokio::time::timeout(self.timeout, limited.read_until(b'\n', &mut raw)).await;
        let lost = |why: String| {
            Outcome::connection(format!(
                "lost connection with {} while {stage}{why}",
                self.name
            ))
        };
        match read {
            Err(_) => {
                return Err(Outcome::timeout(
                    &format!("waiting for reply to {stage}"),
                    &self.name,
                ));
            }
            Ok(Err(e)) => return Err(lost(format!(": {}", os_text(&e)))),
            Ok(Ok(0)) => return Err(lost(String::new())),
            Ok(Ok(_)) => {}
        }
        if raw.last() != Some(&b'\n') && raw.len() < MAX_REPLY_LINE {
            // The read ended short of the limit without a line end: the peer hung up in
            // the middle of a line.
            return Err(lost(String::new()));
        }
        if raw.last() != Some(&b'\n') {
            return Err(Outcome::temporary(
                Enhanced(4, 5, 0),
                format!(
                    "host {} sent a reply line longer than {MAX_REPLY_LINE} bytes while {stage}",
                    self.name
                ),
            ));
        }
        Ok(raw)
    }

    /// The message and the end of data (RFC 5321 section 4.5.2). A message with no line
    /// starting with a dot goes as it is, the terminator after it in the same `writev`;
    /// only one that needs stuffing is copied.
    pub(super) async fn write_message(&mut self, message: &[u8]) -> Result<(), Outcome> {
        const STAGE: &str = "sending message body";
        let Some(end) = crate::proto::end_without_stuffing(message) else {
            let mut wire = Vec::with_capacity(message.len() + 16);
            dot_stuff(message, &mut wire);
            return self.write(&wire, STAGE).await;
        };
        let w = self.io.get_mut();
        let write = async {
            let mut parts = [std::io::IoSlice::new(message), std::io::IoSlice::new(end)];
            let mut left = &mut parts[..];
            while !left.is_empty() {
                let n = w.write_vectored(left).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                std::io::IoSlice::advance_slices(&mut left, n);
            }
            w.flush().await
        };
        let result = tokio::time::timeout(self.timeout, write).await;
        self.finish_write(result, STAGE)
    }

    pub(super) async fn write(&mut self, bytes: &[u8], stage: &str) -> Result<(), Outcome> {
        let io = self.io.get_mut();
        let write = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        let result = tokio::time::timeout(self.timeout, write).await;
        self.finish_write(result, stage)
    }

    fn finish_write(
        &self,
        result: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
        stage: &str,
    ) -> Result<(), Outcome> {
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Outcome::connection(format!(
                "lost connection with {} while {stage}: {}",
                self.name,
                os_text(&e)
            ))),
            Err(_) => Err(Outcome::timeout(stage, &self.name)),
        }
    }

    pub(super) async fn command(&mut self, line: &str, stage: &str) -> Result<Reply, Outcome> {
        self.write(format!("{line}\r\n").as_bytes(), stage).await?;
        self.read_reply(stage).await
    }

    /// QUIT in the background with a short timeout of its own: a next hop that never
    /// answers QUIT holds nothing of ours but this task and its socket.
    pub(super) fn quit_later(self) {
        tokio::spawn(self.quit());
    }

    pub(super) async fn quit(mut self) {
        self.timeout = QUIT_TIMEOUT;
        let _ = self.command("QUIT", "QUIT").await;
    }
}

/// How long a QUIT may take before the connection is simply closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
