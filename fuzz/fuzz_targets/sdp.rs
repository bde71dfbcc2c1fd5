//! Any bytes as a session description: reading the audio endpoint and direction, rebuilding
//! it for the other side of the relay, continuing another session with it, taking its hold
//! off, answering an offer against another (keeping its telephone-events or not), and
//! answering it as the far end. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::media::sdp;

fuzz_target!(|data: &[u8]| {
    let relay = "198.51.100.1".parse().unwrap();
    let _ = sdp::audio_endpoint(data);
    let _ = sdp::direction(data);
    let rebuilt = sdp::rebuild(data, relay, 20000);
    if sdp::audio_endpoint(data).is_some() {
        let endpoint = sdp::audio_endpoint(&rebuilt);
        assert_eq!(
            endpoint.map(|e| e.ip()),
            Some(relay),
            "a rebuilt description points at the relay"
        );
    }
    // The input split in two: an offer and another side's description.
    let half = data.len() / 2;
    let _ = sdp::answer(&data[..half], &data[half..], relay, 20002);
    // A call-in keying its token: its events kept; what the edge's keypad would use of it.
    if let Some(answer) = sdp::answer_with_events(&data[..half], &data[half..], relay, 20012) {
        assert_eq!(
            sdp::audio_endpoint(&answer),
            Some(std::net::SocketAddr::new(relay, 20012)),
            "the keyed call-in's answer points at the relay"
        );
        let _ = sdp::agreed(&answer);
    }
    let _ = sdp::agreed(data);
    // As the next version of another session, or offered both ways, it points where it did.
    let continued = sdp::continuing(&rebuilt, &data[half..]);
    assert_eq!(sdp::audio_endpoint(&continued), sdp::audio_endpoint(&rebuilt));
    assert_eq!(sdp::audio_endpoint(&sdp::both_ways(data)), sdp::audio_endpoint(data));
    let offer = sdp::offer(relay, 20004);
    let _ = sdp::answer(&offer, data, relay, 20006);
    let _ = sdp::answer(data, &offer, relay, 20008);
    if let Some((answer, _)) = sdp::answer_as_endpoint(data, relay, 20010) {
        assert_eq!(
            sdp::audio_endpoint(&answer),
            Some(std::net::SocketAddr::new(relay, 20010)),
            "the edge's own answer points at the edge"
        );
    }
});
