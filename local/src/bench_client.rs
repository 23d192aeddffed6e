//! The bench's HTTP/1.1 client for its submit lines: one keep-alive connection a client, each
//! request written whole from bytes made before the clock starts, each answer read to the end
//! of its body. The runtime shares this machine's cores with the driver, so the driver should
//! cost as little as it can: a general-purpose client took about a third of a core per 10,000
//! requests, CPU the runtime under test then did not have.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request, written once: `POST <path>` to `base` (`http://host:port`) with a JSON body.
pub(super) fn post(base: &str, path: &str, auth: &str, body: &str) -> anyhow::Result<Vec<u8>> {
    let host = base
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// address: {base}"))?;
    Ok(format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: {auth}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes())
}

/// One keep-alive connection.
pub(super) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub(super) async fn open(base: &str) -> anyhow::Result<Self> {
        let host = base.strip_prefix("http://").unwrap_or(base);
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send `request` and read its answer whole; its status.
    pub(super) async fn send(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let (status, length) = head(&self.buf[..end])?;
                let whole = end + 4 + length;
                while self.buf.len() < whole {
                    self.fill().await?;
                }
                if self.buf.len() > whole {
                    bail!("the server answered more than one response");
                }
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The status and the body's length, from an answer's head.
fn head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let text = std::str::from_utf8(head).context("an answer's head that is not text")?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {text:?}"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer, which this client does not read");
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().context("its content-length")?);
        }
    }
    Ok((status, length.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answers_head_gives_its_status_and_body_length() {
        let (status, length) = super::head(
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\ncontent-length: 57",
        )
        .unwrap();
        assert_eq!((status, length), (202, 57));
        assert!(super::head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").is_err());
    }
}
