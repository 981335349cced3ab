//! Helpers shared by the unit tests of several modules.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Moves pending TLS records from `from` to `to` and lets `to` process them.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buffer = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buffer).unwrap();
    }
    let mut reader = &buffer[..];
    while !reader.is_empty() {
        to.read_tls(&mut reader).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// Runs a complete in-memory handshake, then sends one message each way.
/// Returns the first error either side reports.
pub(crate) fn handshake(
    client_config: ClientConfig,
    server_config: ServerConfig,
    server_name: &str,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut client: Connection = ClientConnection::new(Arc::new(client_config), name)?.into();
    let mut server: Connection = ServerConnection::new(Arc::new(server_config))?.into();

    for _ in 0..10 {
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());

    client.writer().write_all(b"ping").unwrap();
    transfer(&mut client, &mut server)?;
    let mut got = [0u8; 4];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    server.writer().write_all(b"pong").unwrap();
    transfer(&mut server, &mut client)?;
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");

    match (client, server) {
        (Connection::Client(c), Connection::Server(s)) => Ok((c, s)),
        _ => unreachable!("connections keep their sides"),
    }
}
