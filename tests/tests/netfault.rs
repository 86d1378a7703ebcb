//! The degraded links of the fault harness (`corekv_tests::netfault`) do
//! what they claim, between two loopback IPs: a delayed link holds every
//! packet back (a TCP round trip takes at least twice the delay), a lossy
//! link drops about the share it was given, and healing restores both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use corekv_tests::cluster::next_subnet;
use corekv_tests::netfault::{LinkFault, LinkSpec};

/// The smallest of five TCP round trips of one byte from `a` to `b`.
fn min_rtt(a: &str, b: &str) -> Duration {
    let l = TcpListener::bind((b, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut byte = [0u8; 1];
        while s.read_exact(&mut byte).is_ok() {
            s.write_all(&byte).unwrap();
        }
    });
    let mut s = connect_from(a, addr);
    s.set_nodelay(true).unwrap();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        s.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).unwrap();
        best = best.min(t.elapsed());
    }
    drop(s);
    echo.join().unwrap();
    best
}

/// A TCP connection from source IP `src` to `to` (std has no
/// bind-before-connect, so through libc).
fn connect_from(src: &str, to: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let src: std::net::Ipv4Addr = src.parse().unwrap();
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (sin(src, 0), sin(*to.ip(), to.port()));
    // SAFETY: socket calls on a descriptor this function owns until it
    // hands it to TcpStream; the addresses live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        assert_eq!(libc::bind(fd, (&raw const local).cast(), len), 0, "bind {src}");
        assert_eq!(libc::connect(fd, (&raw const remote).cast(), len), 0, "connect {to}");
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_delayed_link_holds_packets_back_until_healed() {
    let k = next_subnet();
    let (a, b) = (format!("127.0.{k}.1"), format!("127.0.{k}.2"));
    let before = min_rtt(&a, &b);
    let delay = Duration::from_millis(150);
    let mut f = LinkFault::new(&[&a], &[&b], LinkSpec { drop: 0.0, delay }).unwrap();
    let slow = min_rtt(&a, &b);
    assert!(slow >= 2 * delay, "round trip {slow:?} with {delay:?} each way");
    let delayed = f.heal().unwrap();
    assert!(delayed >= 10, "only {delayed} packets went through the delay queue");
    let after = min_rtt(&a, &b);
    assert!(
        after < delay,
        "round trip {after:?} after healing (before the fault: {before:?})"
    );
}

#[test]
fn a_lossy_link_drops_about_its_share_until_healed() {
    let k = next_subnet();
    let (a, b) = (format!("127.0.{k}.1"), format!("127.0.{k}.2"));
    let rx = UdpSocket::bind((b.as_str(), 0)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let tx = UdpSocket::bind((a.as_str(), 0)).unwrap();
    // In batches of 50, drained in between: a burst of a thousand would
    // overflow the receiver's socket buffer and count as losses.
    let count = |n: usize| {
        let mut got = 0;
        let mut buf = [0u8; 4];
        for _ in 0..n / 50 {
            for _ in 0..50 {
                tx.send_to(b"p", rx.local_addr().unwrap()).unwrap();
            }
            while rx.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        got
    };
    let f = LinkFault::new(
        &[&a],
        &[&b],
        LinkSpec {
            drop: 0.5,
            delay: Duration::ZERO,
        },
    )
    .unwrap();
    let got = count(1000);
    // 1000 draws at 1/2: outside [400, 600] has odds below 1e-9.
    assert!(
        (400..=600).contains(&got),
        "{got} of 1000 datagrams passed a 50% lossy link"
    );
    drop(f);
    assert_eq!(count(200), 200, "datagrams lost after healing");
}
