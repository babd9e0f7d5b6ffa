//! `FakeSmtp`: a small SMTP server on loopback that records every message it accepts
//! (envelope, parsed headers and decoded body) and can be told to reject a recipient
//! with a given reply code (`550` mailbox unknown, `451` try again later).
//!
//! It speaks enough of RFC 5321 for a real client: `EHLO`/`HELO`, `MAIL FROM`,
//! `RCPT TO`, `DATA` (with dot-unstuffing), `RSET`, `NOOP`, `QUIT`; it offers neither
//! STARTTLS nor AUTH, so point a plain `smtp://127.0.0.1:{port}` URL at it
//! ([`FakeSmtp::url`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use homeroom_email_smtp::fake::FakeSmtp;
//! use homeroom_email_smtp::{SmtpConfig, SmtpEmail};
//! let smtp = FakeSmtp::start().await?;
//! let email = SmtpEmail::new(&SmtpConfig::new(smtp.url(), "office@hillside.example"))?;
//! smtp.reject("nobody@families.example", 550);
//! // … send through `email`, then:
//! let received = smtp.wait_for_messages(1, std::time::Duration::from_secs(10)).await?;
//! assert_eq!(received[0].header("Subject"), Some("Field trip"));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// The longest command or message line accepted, in bytes.
const MAX_LINE: usize = 64 * 1024;
/// The largest message accepted, in bytes.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEmail {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients it accepted (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message as sent, after dot-unstuffing.
    pub raw: Vec<u8>,
    /// Every header, in order, with encoded words decoded.
    pub headers: Vec<(String, String)>,
    /// The body, transfer-decoded and in its charset.
    pub body: String,
    /// The `Content-Type` the body was sent as (`text/plain`, …).
    pub mimetype: String,
    /// The body's charset (`utf-8`, …).
    pub charset: String,
}

impl ReceivedEmail {
    /// The first header named `name` (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The display name and address of the `From` header.
    pub fn from(&self) -> Option<(Option<String>, String)> {
        let raw = self.header("From")?;
        let list = mailparse::addrparse(raw).ok()?;
        match list.iter().next()? {
            mailparse::MailAddr::Single(info) => {
                Some((info.display_name.clone(), info.addr.clone()))
            }
            mailparse::MailAddr::Group(_) => None,
        }
    }
}

/// What went wrong driving the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The fake could not listen on loopback.
    #[error("cannot start the fake SMTP server: {0}")]
    Io(#[from] std::io::Error),
    /// Fewer messages arrived than waited for.
    #[error("{got} of {wanted} messages arrived within {within:?}")]
    TimedOut {
        /// How many were awaited.
        wanted: usize,
        /// How many there were.
        got: usize,
        /// How long it waited.
        within: Duration,
    },
}

#[derive(Default)]
struct Ledger {
    messages: Vec<ReceivedEmail>,
    rejected: HashMap<String, u16>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    received: watch::Sender<usize>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fake SMTP server on `127.0.0.1` at a port of its own; stops when dropped.
pub struct FakeSmtp {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeSmtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSmtp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeSmtp {
    /// Starts a fake server (inside a Tokio runtime, which serves it until dropped).
    ///
    /// # Errors
    /// [`FakeError::Io`] when it cannot listen on loopback.
    pub async fn start() -> Result<Self, FakeError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger::default()),
            received: watch::channel(0).0,
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(session(stream, Arc::clone(&serving)));
                        }
                        Err(error) => eprintln!("fake SMTP accept failed: {error}"),
                    },
                }
            }
        });
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
        })
    }

    /// `smtp://127.0.0.1:{port}`: the `HOMEROOM_SMTP_URL` that reaches this fake.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, answers `RCPT TO:<recipient>` with `code` (a `5xx` is permanent, a
    /// `4xx` is "try again later").
    pub fn reject(&self, recipient: &str, code: u16) {
        self.shared
            .ledger()
            .rejected
            .insert(recipient.to_ascii_lowercase(), code);
    }

    /// Accepts `recipient` again.
    pub fn accept(&self, recipient: &str) {
        self.shared
            .ledger()
            .rejected
            .remove(&recipient.to_ascii_lowercase());
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedEmail> {
        self.shared.ledger().messages.clone()
    }

    /// Waits until at least `count` messages were accepted, then answers them all.
    ///
    /// # Errors
    /// [`FakeError::TimedOut`] when fewer arrived `within` that time.
    pub async fn wait_for_messages(
        &self,
        count: usize,
        within: Duration,
    ) -> Result<Vec<ReceivedEmail>, FakeError> {
        let mut received = self.shared.received.subscribe();
        let arrived = tokio::time::timeout(within, received.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if arrived {
            Ok(self.messages())
        } else {
            Err(FakeError::TimedOut {
                wanted: count,
                got: self.messages().len(),
                within,
            })
        }
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The address inside `<…>` after a `MAIL FROM:` or `RCPT TO:` verb, parameters dropped.
fn path_of(argument: &str) -> String {
    let argument = argument.trim();
    match (argument.find('<'), argument.find('>')) {
        (Some(open), Some(close)) if open < close => argument[open + 1..close].to_owned(),
        _ => argument
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The argument after `verb` when `line` starts with it (case-insensitive).
fn strip_verb<'a>(line: &'a str, verb: &str) -> Option<&'a str> {
    let head = line.get(..verb.len())?;
    head.eq_ignore_ascii_case(verb).then(|| &line[verb.len()..])
}

fn rejection_text(code: u16, recipient: &str) -> String {
    if code >= 500 {
        format!("{code} 5.1.1 <{recipient}>: Recipient address rejected: User unknown")
    } else {
        format!("{code} 4.7.1 <{recipient}>: Recipient address rejected: Try again later")
    }
}

fn parse(mail_from: String, rcpt_to: Vec<String>, raw: Vec<u8>) -> ReceivedEmail {
    let (headers, body, mimetype, charset) = match mailparse::parse_mail(&raw) {
        Ok(parsed) => (
            parsed
                .headers
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect(),
            parsed.get_body().unwrap_or_default(),
            parsed.ctype.mimetype.clone(),
            parsed.ctype.charset.clone(),
        ),
        Err(_) => (Vec::new(), String::new(), String::new(), String::new()),
    };
    ReceivedEmail {
        mail_from,
        rcpt_to,
        raw,
        headers,
        body,
        mimetype,
        charset,
    }
}

/// One client connection, until `QUIT` or the client goes away.
async fn session(stream: TcpStream, shared: Arc<Shared>) {
    if let Err(error) = converse(stream, &shared).await {
        eprintln!("fake SMTP session ended: {error}");
    }
}

async fn converse(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    writer.write_all(b"220 fake-smtp ESMTP ready\r\n").await?;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line);
        let command = command.trim_end_matches(['\r', '\n']);
        let answer = if let Some(_host) = strip_verb(command, "EHLO") {
            mail_from = None;
            rcpt_to.clear();
            "250-fake-smtp\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING".to_owned()
        } else if strip_verb(command, "HELO").is_some() {
            "250 fake-smtp".to_owned()
        } else if let Some(argument) = strip_verb(command, "MAIL FROM:") {
            mail_from = Some(path_of(argument));
            rcpt_to.clear();
            "250 2.1.0 OK".to_owned()
        } else if let Some(argument) = strip_verb(command, "RCPT TO:") {
            let recipient = path_of(argument);
            let rejected = shared
                .ledger()
                .rejected
                .get(&recipient.to_ascii_lowercase())
                .copied();
            match (mail_from.is_some(), rejected) {
                (false, _) => "503 5.5.1 MAIL FROM first".to_owned(),
                (true, Some(code)) => rejection_text(code, &recipient),
                (true, None) => {
                    rcpt_to.push(recipient);
                    "250 2.1.5 OK".to_owned()
                }
            }
        } else if command.eq_ignore_ascii_case("DATA") {
            match (&mail_from, rcpt_to.is_empty()) {
                (None, _) | (_, true) => "554 5.5.1 No valid recipients".to_owned(),
                (Some(from), false) => {
                    writer
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let raw = read_data(&mut reader).await?;
                    let message = parse(from.clone(), std::mem::take(&mut rcpt_to), raw);
                    mail_from = None;
                    let count = {
                        let mut ledger = shared.ledger();
                        ledger.messages.push(message);
                        ledger.messages.len()
                    };
                    shared.received.send_replace(count);
                    format!("250 2.0.0 OK queued as fake-{count}")
                }
            }
        } else if command.eq_ignore_ascii_case("RSET") {
            mail_from = None;
            rcpt_to.clear();
            "250 2.0.0 OK".to_owned()
        } else if strip_verb(command, "NOOP").is_some() {
            "250 2.0.0 OK".to_owned()
        } else if command.eq_ignore_ascii_case("QUIT") {
            writer.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not implemented".to_owned()
        };
        writer.write_all(format!("{answer}\r\n").as_bytes()).await?;
    }
}

/// The message lines up to the lone `.`, dot-unstuffed, lines ending in CRLF.
async fn read_data<R>(reader: &mut BufReader<R>) -> std::io::Result<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut raw = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content == b"." {
            return Ok(raw);
        }
        let content = content.strip_prefix(b".").unwrap_or(content);
        if raw.len() + content.len() < MAX_MESSAGE {
            raw.extend_from_slice(content);
            raw.extend_from_slice(b"\r\n");
        }
    }
}
