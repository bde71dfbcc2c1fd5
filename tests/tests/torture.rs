//! The SIP torture messages of RFC 4475 (49) and RFC 5118 (12, IPv6), written for this edge
//! from the RFCs' descriptions: each keeps the construct its section exercises, with this
//! test's own hosts. Every request goes to a running edge over real UDP; the test asserts the
//! status the edge answers (a malformed request gets its 400 before any challenge, "parse,
//! then authenticate"), that responses nobody asked for get no answer, that nothing a refused
//! REGISTER carried reached the log, and that the edge still serves afterwards.
//!
//! The peer sits on 127.0.0.61:5060, so the messages' top Vias can name hosts without a port
//! as the RFCs' do: the edge answers the packet's source address at the Via's port (5060).

use std::time::Duration;

use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{SipEdge, header_values, status};
use signaling::digest::Algorithm;
use tokio::net::UdpSocket;

/// What the edge must do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answer with this status.
    Status(u16),
    /// Say nothing (a response no transaction of the edge's is waiting for).
    Silence,
}
use Expect::{Silence, Status};

struct Case {
    /// The RFC's name for the message.
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

/// The message as sent: CRLF line ends, and `{len}` replaced by the body's length.
fn wire(text: &str) -> Vec<u8> {
    let text = text.replace('\n', "\r\n");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).len();
    text.replace("{len}", &body.to_string()).into_bytes()
}

const SDP: &str = "v=0
o=torture 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

fn case(name: &'static str, text: &str, expect: Expect) -> Case {
    Case {
        name,
        bytes: wire(&text.replace("{sdp}", SDP)),
        expect,
    }
}

/// RFC 4475 §3.1.1: valid messages, some of them odd.
fn valid_messages() -> Vec<Case> {
    let mut intmeth = String::new();
    intmeth.push_str(
        "!odd-Method0123456789_*+`.%really'~ sip:1_strange.URI~(is-it!)&isn't+it$/odd?,/;;*:&pass+w=1,odd!*pa$s~_x.(yes-it-is)@torture.test SIP/2.0\n\
         Via: SIP/2.0/UDP host1.torture.test;branch=z9hG4bK-.!%66*_+`'~\n\
         To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_strange.URI~(is-it!)&isn't+it$/odd?,/;;*@torture.test>\n\
         From: tok1~` tok2'+_ tok3*%!.- <sip:plain@torture.test>;param''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\";tag=_tag~1'+`*%!-.\n\
         Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n\
         CSeq: 139122385 !odd-Method0123456789_*+`.%really'~\n\
         Max-Forwards: 255\n\
         extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}\n\
         Content-Length: 0\n\n",
    );
    let mut mpart01 = wire(
        "MESSAGE sip:kumiko@torture.test SIP/2.0
Via: SIP/2.0/UDP host1.torture.test;branch=z9hG4bK-mpart01;rport
Max-Forwards: 70
Contact: <sip:fluffy@192.0.2.7:5070>
To: <sip:kumiko@torture.test>
From: <sip:fluffy@torture.test>;tag=2fb0dcc9
Call-ID: mpart01.3d9485ad0c49859b
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Content-Length: {len}

",
    );
    let parts: &[&[u8]] = &[
        b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n\r\nHello\r\n",
        b"--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\n\r\n",
        &[
            0x30, 0x82, 0x00, 0x52, 0x06, 0x09, 0x2a, 0x86, 0x00, 0x00, 0xff, 0xfe,
        ],
        b"\r\n--7a9cbec02ceef655--\r\n",
    ];
    let body: Vec<u8> = parts.concat();
    let head = String::from_utf8(mpart01.clone()).unwrap();
    mpart01 = head
        .replace(
            "Content-Length: {len}",
            &format!("Content-Length: {}", body.len()),
        )
        .into_bytes();
    mpart01.extend_from_slice(&body);

    vec![
        // §3.1.1.1: folding, LWS everywhere, escaped quotes, an empty Subject, unknown
        // headers and parameters, leading zeros. Its To has a tag: a re-INVITE for a dialog
        // the edge does not have.
        case(
            "wsinv",
            r#"INVITE sip:bob@pbx.torture.test;oddparam SIP/2.0
TO :
 sip:bob@pbx.torture.test ;   tag    = 1918181833n
from   : "Carol \\\""       <sip:carol@torture.test>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : {len}
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    host1.torture.test;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.torture.test;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.torture.test   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:carol@torture.test> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{sdp}"#,
            Status(481),
        ),
        // §3.1.1.2: every token character in the method, the Request-URI's user and
        // password, a quoted NUL; an unknown method gets 501.
        case("intmeth", &intmeth, Status(501)),
        // §3.1.1.3: %-escapes in the URIs; a well-formed INVITE from no trunk is challenged.
        case(
            "esc01",
            "INVITE sip:sips%3Auser%40torture.test@torture.test SIP/2.0
To: sip:%75se%72@torture.test
From: <sip:I%20have%20spaces@torture.test>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.torture.test;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.torture.test;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: {len}

{sdp}",
            Status(407),
        ),
        // §3.1.1.4: escaped NULs in the AOR and contacts: a REGISTER to challenge.
        case(
            "escnull",
            "REGISTER sip:torture.test SIP/2.0
To: sip:null-%00-null@torture.test
From: sip:null-%00-null@torture.test;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.torture.test;branch=z9hG4bKkdjuw-escnull
Contact: <sip:%00@host5.torture.test>
Contact: <sip:%00%00@host5.torture.test>
L:0

",
            Status(401),
        ),
        // §3.1.1.5: % where it is no escape: RE%47IST%45R is an unknown method, not REGISTER.
        case(
            "esc02",
            "RE%47IST%45R sip:registrar.torture.test SIP/2.0
To: \"%Z%45\" <sip:resource@torture.test>
From: \"%Z%45\" <sip:resource@torture.test>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/UDP host.torture.test;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.torture.test>
C%6Fntact: <sip:alias2@host2.torture.test>
Contact: <sip:alias3@host3.torture.test>
l: 0

",
            Status(501),
        ),
        // §3.1.1.6: no LWS between a display-name token and '<'.
        case(
            "lwsdisp",
            "OPTIONS sip:user@torture.test SIP/2.0
To: sip:user@torture.test
From: caller<sip:caller@torture.test>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.torture.test
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.torture.test;branch=z9hG4bKkdjuw-lwsdisp
l: 0

",
            Status(200),
        ),
        // §3.1.1.7: long values and 34 Vias in every spelling of the name.
        case("longreq", &longreq(), Status(407)),
        // §3.1.1.8: octets after the body in the datagram are noise (one answer, to the
        // REGISTER; the "INVITE" after it is never read).
        case(
            "dblreq",
            "REGISTER sip:torture.test SIP/2.0
To: sip:j.user@torture.test
From: sip:j.user@torture.test;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.torture.test
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0


INVITE sip:joe@torture.test SIP/2.0
t: sip:joe@torture.test
From: sip:caller@torture.test;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

{sdp}",
            Status(401),
        ),
        // §3.1.1.9: a ';' (and an escaped '@') in the Request-URI's user part.
        case(
            "semiuri",
            "OPTIONS sip:user;par=u%40example.net@torture.test SIP/2.0
To: sip:j_user@torture.test
From: sip:caller@torture.test;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw-semiuri
l: 0

",
            Status(200),
        ),
        // §3.1.1.10: known and unknown transports in the Vias below the top one.
        case(
            "transports",
            "OPTIONS sip:user@torture.test SIP/2.0
To: sip:user@torture.test
From: <sip:caller@torture.test>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.torture.test;branch=z9hG4bKkdjuw-transports
Via: SIP/2.0/SCTP t2.torture.test;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.torture.test;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.torture.test;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.torture.test;branch=z9hG4bK0a9idfnee
l: 0

",
            Status(200),
        ),
        // §3.1.1.11: a multipart body with binary octets and NULs, framed by its length; the
        // edge takes no MESSAGE outside a call (405).
        Case {
            name: "mpart01",
            bytes: mpart01,
            expect: Status(405),
        },
        // §3.1.1.12 and §3.1.1.13: responses with an unusual and with an empty reason
        // phrase; parsed (see the unit tests in signaling::message), and no transaction of
        // the edge's waits for them.
        case(
            "unreason",
            "SIP/2.0 200 = 2**3 * 5**2 \u{3b5}\u{3ba}\u{3b1}\u{3c4}\u{3cc} \u{3b5}\u{3bd}\u{3bd}\u{3ad}\u{3b1} - \u{3c0}\u{3c1}\u{3ce}\u{3c4}\u{3bf}\u{3c2}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@torture.test;tag=11141343
To: sip:user@torture.test;tag=2229
Content-Length: {len}
Content-Type: application/sdp
Contact: <sip:user@host198.torture.test>

{sdp}",
            Silence,
        ),
        case(
            "noreason",
            "SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@torture.test>;tag=39ansfi3
To: <sip:user@torture.test>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.torture.test>

",
            Silence,
        ),
    ]
}

fn longreq() -> String {
    let long = |word: &str, n: usize| word.repeat(n);
    let mut vias = String::new();
    let spellings = [
        "Via: ", "v: ", "V: ", "Via: ", "ViA: ", "VIa: ", "VIA: ", "via: ", "viA: ", "vIa: ",
        "vIA: ", "V :  ", "v :  ", "V  : ", "v  : ", "Via : ", "Via  : ",
    ];
    for (i, n) in (1..=33).rev().enumerate() {
        let name = spellings.get(i).copied().unwrap_or("Via: ");
        vias.push_str(&format!("{name}SIP/2.0/TCP sip{n}.torture.test\n"));
    }
    format!(
        "INVITE sip:user@torture.test SIP/2.0
To: \"I have a user name of {extreme} proportion\"<sip:user@torture.test:6000;unknownparam1=very{longs}value;longparam{names}=shortvalue;very{longs}ParameterNameWithNoValue>
F: sip:{callers}@torture.test;tag=12{tag}424;unknownheaderparam{names}=unknowheaderparam{values};unknownValueless{paramnames}
Call-ID: longreq.one{reallys}longcallid
CSeq: 3882340 INVITE
Unknown-{caps}-Name: unknown-{longs}-value; unknown-{longs}-parameter-name = unknown-{longs}-parameter-value
Via: SIP/2.0/UDP sip34.torture.test;branch=z9hG4bKlongreq
{vias}Via: SIP/2.0/TCP host.torture.test;received=192.0.2.5;branch=very{longs}{longs}branchvalue
Max-Forwards: 70
Contact: <sip:{callers}@host5.torture.test>
Content-Type: application/sdp
l: {{len}}

{{sdp}}",
        extreme = long("extreme", 10),
        longs = long("long", 20),
        caps = long("Long", 20),
        names = long("name", 24),
        callers = long("amazinglylongcallername", 5),
        tag = long("982", 50),
        values = long("value", 15),
        paramnames = long("paramname", 10),
        reallys = long("really", 20),
    )
}

/// RFC 4475 §3.1.2: invalid messages.
fn invalid_messages() -> Vec<Case> {
    vec![
        // §3.1.2.1: empty Via values and parameters, empty Contact parameters.
        case(
            "badinv01",
            "INVITE sip:user@torture.test SIP/2.0
To: sip:j.user@torture.test
From: sip:caller@torture.test;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@torture.test>;;;;
Content-Length: {len}
Content-Type: application/sdp

{sdp}",
            Status(400),
        ),
        // §3.1.2.2: a Content-Length larger than the datagram's body.
        case(
            "clerr",
            "INVITE sip:user@torture.test SIP/2.0
Max-Forwards: 80
To: sip:j.user@torture.test
From: sip:caller@torture.test;tag=93942939o2
Contact: <sip:caller@hungry.torture.test>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.torture.test;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

{sdp}",
            Status(400),
        ),
        // §3.1.2.3: a negative Content-Length.
        case(
            "ncl",
            "INVITE sip:user@torture.test SIP/2.0
Max-Forwards: 254
To: sip:j.user@torture.test
From: sip:caller@torture.test;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw-ncl
Contact: <sip:caller@example53.torture.test>
Content-Type: application/sdp
Content-Length: -999

{sdp}",
            Status(400),
        ),
        // §3.1.2.4: CSeq past 2^32-1, Max-Forwards past 255, enormous expiries.
        case(
            "scalar02",
            "REGISTER sip:torture.test SIP/2.0
Via: SIP/2.0/UDP host129.torture.test;branch=z9hG4bK342sdfoi3
To: <sip:user@torture.test>
From: <sip:user@torture.test>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.torture.test>
  ;expires=280297596632815
Content-Length: 0

",
            Status(400),
        ),
        // §3.1.2.5: a response with overlarge scalars: discarded.
        case(
            "scalarlg",
            "SIP/2.0 503 Service Unavailable
Via: SIP/2.0/UDP host129.torture.test;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@torture.test>
From: <sip:other@torture.test>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
            Silence,
        ),
        // §3.1.2.6: an unterminated quoted display name.
        case(
            "quotbal",
            "INVITE sip:user@torture.test SIP/2.0
To: \"Mr. J. User <sip:j.user@torture.test>
From: sip:caller@torture.test;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.torture.test>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: {len}

{sdp}",
            Status(400),
        ),
        // §3.1.2.7: the Request-URI in angle brackets.
        case(
            "ltgtruri",
            "INVITE <sip:user@torture.test> SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.torture.test>
Content-Type: application/sdp
Content-Length: {len}

{sdp}",
            Status(400),
        ),
        // §3.1.2.8: LWS inside the Request-URI.
        case(
            "lwsruri",
            "INVITE sip:user@torture.test; lr SIP/2.0
To: sip:user@torture.test;tag=3xfe-9921883-z9f
From: sip:caller@torture.test;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.torture.test>
Content-Type: application/sdp
Content-Length: {len}

{sdp}",
            Status(400),
        ),
        // §3.1.2.9: several SP between the Request-Line's elements.
        case(
            "lwsstart",
            "INVITE  sip:user@torture.test  SIP/2.0
Max-Forwards: 8
To: sip:user@torture.test
From: sip:caller@torture.test;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@torture.test
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.torture.test;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.torture.test>
Content-Type: application/sdp
Content-Length: {len}

{sdp}",
            Status(400),
        ),
        // §3.1.2.10: SP after the SIP-Version.
        case(
            "trws",
            "OPTIONS sip:remote-target@torture.test SIP/2.0  
Via: SIP/2.0/UDP host1.torture.test;branch=z9hG4bK299342093
To: <sip:remote-target@torture.test>
From: <sip:local-resource@torture.test>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

",
            Status(400),
        ),
        // §3.1.2.11: escaped headers in the Request-URI.
        case(
            "escruri",
            "INVITE sip:user@torture.test?Route=%3Csip:torture.test%3E SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.torture.test>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.torture.test;branch=z9hG4bKkdjuw-escruri
Content-Type: application/sdp
Content-Length: {len}

{sdp}",
            Status(400),
        ),
        // §3.1.2.12: a Date in EST. The edge never reads Date, so it is ignored (the RFC's
        // liberal choice) and the INVITE is challenged like any other.
        case(
            "baddate",
            "INVITE sip:user@torture.test SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP host.torture.test;branch=z9hG4bKkdjuw-baddate
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.torture.test>
Content-Type: application/sdp
Content-Length: {len}

{sdp}",
            Status(407),
        ),
        // §3.1.2.13: a Contact URI with headers, not in angle brackets.
        case(
            "regbadct",
            "REGISTER sip:torture.test SIP/2.0
To: sip:user@torture.test
From: sip:user@torture.test;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133;branch=z9hG4bKkdjuw-regbadct
Contact: sip:user@torture.test?Route=%3Csip:sip.torture.test%3E
l: 0

",
            Status(400),
        ),
        // §3.1.2.14: spaces inside the angle brackets around an addr-spec.
        case(
            "badaspec",
            "OPTIONS sip:user@torture.test SIP/2.0
Via: SIP/2.0/UDP host4.torture.test:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: \"Bell, Alexander\" <sip:a.g.bell@torture.test>;tag=433423
To: \"Watson, Thomas\" < sip:t.watson@torture.test >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

",
            Status(400),
        ),
        // §3.1.2.15: unquoted display names with non-token characters.
        case(
            "baddn",
            "OPTIONS sip:t.watson@torture.test SIP/2.0
Via:     SIP/2.0/UDP c.torture.test:5060;branch=z9hG4bKkdjuw-baddn
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@torture.test>;tag=43
To:      Watson, Thomas <sip:t.watson@torture.test>
Call-ID: baddn.31415@c.torture.test
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

",
            Status(400),
        ),
        // §3.1.2.16: SIP/7.0.
        case(
            "badvers",
            "OPTIONS sip:t.watson@torture.test SIP/7.0
Via:     SIP/7.0/UDP c.torture.test;branch=z9hG4bKkdjuw-badvers
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@torture.test>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@torture.test>
Call-ID: badvers.31417@c.torture.test
CSeq:    1 OPTIONS
l: 0

",
            Status(505),
        ),
        // §3.1.2.17: the CSeq names another method than the Request-Line.
        case(
            "mismatch01",
            "OPTIONS sip:user@torture.test SIP/2.0
To: sip:j.user@torture.test
From: sip:caller@torture.test;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.torture.test;branch=z9hG4bKkdjuw-mismatch01
l: 0

",
            Status(400),
        ),
        // §3.1.2.18: an unknown method and a CSeq that does not match it (400 or 501 are
        // both right; the CSeq is checked first).
        case(
            "mismatch02",
            "NEWMETHOD sip:user@torture.test SIP/2.0
To: sip:j.user@torture.test
From: sip:caller@torture.test;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.torture.test>
Via: SIP/2.0/UDP host.torture.test;branch=z9hG4bKkdjuw-mismatch02
Content-Type: application/sdp
l: {len}

{sdp}",
            Status(400),
        ),
        // §3.1.2.19: a status code past 699: dropped.
        case(
            "bigcode",
            "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@torture.test>;tag=39ansfi3
To: <sip:user@torture.test>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.torture.test>

",
            Silence,
        ),
    ]
}

/// RFC 4475 §3.2, §3.3 and §3.4: transaction and application layer semantics, and RFC 2543
/// syntax.
fn semantic_messages() -> Vec<Case> {
    vec![
        // §3.2.1: a branch that is only the magic cookie: matched the RFC 2543 way.
        case(
            "badbranch",
            "OPTIONS sip:user@torture.test SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0

",
            Status(200),
        ),
        // §3.3.1: From, To and Call-ID missing.
        case(
            "insuf",
            "INVITE sip:user@torture.test SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: {len}

{sdp}",
            Status(400),
        ),
        // §3.3.2 and §3.3.3: Request-URI schemes the edge does not serve: 416.
        case(
            "unkscm",
            "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/UDP host9.torture.test;branch=z9hG4bKkdjuw39234-unkscm
Content-Length: 0

",
            Status(416),
        ),
        case(
            "novelsc",
            "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/UDP host9.torture.test;branch=z9hG4bKkdjuw39234-novelsc
Content-Length: 0

",
            Status(416),
        ),
        // §3.3.4: unknown schemes in To, From and Contact: well formed, so the registrar
        // authenticates first (RFC 3261 §10.3 puts authentication before the address of
        // record; once authenticated, a To that is not the user's own is refused 403).
        case(
            "unksm2",
            "REGISTER sip:torture.test SIP/2.0
To: isbn:2983792873
From: <http://www.torture.test>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.torture.test
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw-unksm2
Contact: <name:John_Smith>
l: 0

",
            Status(401),
        ),
        // §3.3.5: Require (420, listing only its own tags) and Proxy-Require (a proxy's).
        case(
            "bext01",
            "OPTIONS sip:user@torture.test SIP/2.0
To: sip:j_user@torture.test
From: sip:caller@torture.test;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP fold-and-staple.torture.test;branch=z9hG4bKkdjuw-bext01
Content-Length: 0

",
            Status(420),
        ),
        // §3.3.6: a body type the edge cannot read: 415 with Accept, before any challenge.
        case(
            "invut",
            "INVITE sip:user@torture.test SIP/2.0
Contact: <sip:caller@host5.torture.test>
To: sip:j.user@torture.test
From: sip:caller@torture.test;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP somehost.torture.test;branch=z9hG4bKkdjuw-invut
Content-Type: application/unknownformat
Content-Length: {len}

<audio>
 <pcmu port=\"443\"/>
</audio>
",
            Status(415),
        ),
        // §3.3.7: an Authorization in an unknown scheme: challenged in a known one.
        case(
            "regaut01",
            "REGISTER sip:torture.test SIP/2.0
To: sip:j.user@torture.test
From: sip:j.user@torture.test;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/UDP 192.0.2.253;branch=z9hG4bKkdjuw-regaut01
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0

",
            Status(401),
        ),
        // §3.3.8: two Call-IDs, CSeqs, Froms, Tos and Max-Forwards.
        case(
            "multi01",
            "INVITE sip:user@torture.test SIP/2.0
Contact: <sip:caller@host25.torture.test>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw-multi01
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@torture.test;tag=3413415
To: sip:user@torture.test
To: sip:other@torture.test
From: sip:caller@torture.test;tag=2923420123
Content-Type: application/sdp
l: {len}
Contact: <sip:caller@host36.torture.test>
Max-Forwards: 5

{sdp}",
            Status(400),
        ),
        // §3.3.9: two Content-Lengths: nobody can know where the body ends.
        case(
            "mcl01",
            "OPTIONS sip:user@torture.test SIP/2.0
Via: SIP/2.0/UDP host5.torture.test;branch=z9hG4bK293423-mcl01
To: sip:user@torture.test
From: sip:other@torture.test;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
",
            Status(400),
        ),
        // §3.3.10: a 200 whose second Via is a broadcast address: no transaction waits.
        case(
            "bcast",
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@torture.test;tag=11141343
To: sip:user@torture.test;tag=2229
Content-Length: {len}
Content-Type: application/sdp
Contact: <sip:user@host28.torture.test>

{sdp}",
            Silence,
        ),
        // §3.3.11: Max-Forwards 0 on an OPTIONS: an endpoint answers it.
        case(
            "zeromf",
            "OPTIONS sip:user@torture.test SIP/2.0
To: sip:user@torture.test
From: sip:caller@torture.test;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP host1.torture.test;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
Content-Length: 0

",
            Status(200),
        ),
        // §3.3.12 to §3.3.14: Contact parameters, URI parameters and escaped URI headers in
        // a REGISTER: all well formed, so challenged.
        case(
            "cparam01",
            "REGISTER sip:torture.test SIP/2.0
Via: SIP/2.0/UDP saturn.torture.test:5060;branch=z9hG4bKkdjuw-cparam01
Max-Forwards: 70
From: sip:watson@torture.test;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@torture.test
Call-ID: cparam01.70710@saturn.torture.test
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.torture.test;unknownparam
l: 0

",
            Status(401),
        ),
        case(
            "cparam02",
            "REGISTER sip:torture.test SIP/2.0
Via: SIP/2.0/UDP saturn.torture.test:5060;branch=z9hG4bKkdjuw-cparam02
Max-Forwards: 70
From: sip:watson@torture.test;tag=838293
To: sip:watson@torture.test
Call-ID: cparam02.70710@saturn.torture.test
CSeq: 3 REGISTER
Contact: <sip:+19725552222@gw1.torture.test;unknownparam>
l: 0

",
            Status(401),
        ),
        case(
            "regescrt",
            "REGISTER sip:torture.test SIP/2.0
To: sip:user@torture.test
From: sip:user@torture.test;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.torture.test;branch=z9hG4bKkdjuw-regescrt
M: <sip:user@torture.test?Route=%3Csip:sip.torture.test%3E>
L:0

",
            Status(401),
        ),
        // §3.3.15: an offer whose sender accepts no session description in the answer: 406.
        case(
            "sdp01",
            "INVITE sip:user@torture.test SIP/2.0
To: sip:j_user@torture.test
Contact: <sip:caller@host15.torture.test>
From: sip:caller@torture.test;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyKnowsThis
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw-sdp01
Content-Length: {len}
Content-Type: application/sdp

{sdp}",
            Status(406),
        ),
        // §3.4.1: RFC 2543 syntax: no branch, no From tag, no Max-Forwards or
        // Content-Length (the datagram ends the body). Taken, so challenged.
        case(
            "inv2543",
            "INVITE sip:UserB@torture.test SIP/2.0
Via: SIP/2.0/UDP iftgw.torture.test
From: <sip:+13035551111@ift.client.torture.test;user=phone>
Record-Route: <sip:UserB@torture.test;maddr=ss1.torture.test>
To: sip:+16505552222@ss1.torture.test;user=phone
Call-ID: inv2543.1717@ift.client.torture.test
CSeq: 56 INVITE
Content-Type: application/sdp

v=0
o=torture 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
            Status(407),
        ),
    ]
}

const SDP6: &str = "v=0
o=assistant 971731711378798081 0 IN IP6 2001:db8::20
s=Live video feed
c=IN IP6 2001:db8::20
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

/// RFC 5118: IPv6 in SIP.
fn ipv6_messages() -> Vec<Case> {
    let register = |name: &'static str, request_uri: &str, host: &str, expect: Expect| {
        case(
            name,
            &format!(
                "REGISTER {request_uri} SIP/2.0
To: sip:user@{host}
From: sip:user@{host};tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-{name}
Call-ID: SSG9559905523997077@hlau_4100
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::1]>
CSeq: 98176 REGISTER
Content-Length: 0

"
            ),
            expect,
        )
    };
    let options = |name: &'static str, request_uri: &str, via: &str, expect: Expect| {
        case(
            name,
            &format!(
                "OPTIONS {request_uri} SIP/2.0
To: sip:user@torture.test
From: sip:user@torture.test;tag=217
Via: {via};branch=z9hG4bKas3-{name}
Call-ID: {name}.SSG95523997077@hlau_4100
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::9:1]>
CSeq: 921 OPTIONS
Content-Length: 0

"
            ),
            expect,
        )
    };
    let invite = |name: &'static str, request_uri: &str, contact: &str, sdp: &str| {
        case(
            name,
            &format!(
                "INVITE {request_uri} SIP/2.0
To: sip:user@[2001:db8::10]
From: sip:user@[2001:db8::20];tag=81x2
Via: SIP/2.0/UDP [2001:db8::20];branch=z9hG4bKas3-{name}
Call-ID: {name}.SSG9559905523997077@hlau_4100
Contact: \"Caller\" <sip:caller@{contact}>
CSeq: 8612 INVITE
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: {{len}}

{sdp}"
            ),
            Status(407),
        )
    };
    let v4_and_v6 = "v=0
o=bob 280744730 28977631 IN IP4 host.torture.test
s=
t=0 0
m=audio 22334 RTP/AVP 0
c=IN IP4 192.0.2.1
m=audio 34567 RTP/AVP 0
c=IN IP6 2001:db8::1
";
    let mapped = SDP6.replace("2001:db8::20", "::ffff:192.0.2.2");
    vec![
        // §4.1 and §4.2: an IPv6 reference in brackets is valid; without them it is not.
        register(
            "ipv6-good",
            "sip:[2001:db8::10]",
            "[2001:db8::10]",
            Status(401),
        ),
        register("ipv6-bad", "sip:2001:db8::10", "2001:db8::10", Status(400)),
        // §4.3 and §4.4: inside the brackets a last group is part of the address; after
        // them it is the port.
        register(
            "port-ambiguous",
            "sip:[2001:db8::10:5070]",
            "[2001:db8::10]",
            Status(401),
        ),
        register(
            "port-unambiguous",
            "sip:[2001:db8::10]:5070",
            "[2001:db8::10]",
            Status(401),
        ),
        // §4.5: received= with and without the brackets (the edge writes its own anyway).
        options(
            "via-received-param-with-delim",
            "sip:[2001:db8::10]",
            "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255]",
            Status(200),
        ),
        options(
            "via-received-param-no-delim",
            "sip:[2001:db8::10]",
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255",
            Status(200),
        ),
        // §4.6: IPv6 addresses in the session description.
        invite(
            "ipv6-in-sdp",
            "sip:user@[2001:db8::10]",
            "[2001:db8::20]",
            SDP6,
        ),
        // §4.7: IPv4 and IPv6 addresses in one request's headers (a BYE for no dialog).
        case(
            "mult-ip-in-header",
            "BYE sip:user@host.torture.test SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3-111
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144
Via: SIP/2.0/TCP [2001:db8::9:255];branch=z9hG4bK451jj;received=192.0.2.200
Call-ID: 997077@lau_4100
Max-Forwards: 70
CSeq: 89187 BYE
To: sip:user@torture.test;tag=9817--94
From: sip:user@torture.test;tag=81x2
Content-Length: 0

",
            Status(481),
        ),
        // §4.8: IPv4 and IPv6 media in one session description.
        invite(
            "mult-ip-in-sdp",
            "sip:user@[2001:db8::10]",
            "[2001:db8::20]",
            v4_and_v6,
        ),
        // §4.9: IPv4-mapped IPv6 addresses.
        invite(
            "ipv4-mapped-ipv6",
            "sip:user@[::ffff:192.0.2.10]",
            "[::ffff:192.0.2.2]",
            &mapped,
        ),
        // §4.10: the RFC 3261 ABNF bug: three colons are no IPv6 address, two are.
        options(
            "ipv6-bug-abnf-3-colons",
            "sip:[2001:db8:::192.0.2.1]",
            "SIP/2.0/UDP [2001:db8::9:1]",
            Status(400),
        ),
        options(
            "ipv6-correct-abnf-2-colons",
            "sip:[2001:db8::192.0.2.1]",
            "SIP/2.0/UDP [2001:db8::9:1]",
            Status(200),
        ),
    ]
}

/// The Call-ID a message carries (full or compact name), as written.
fn call_id(message: &[u8]) -> String {
    String::from_utf8_lossy(message)
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            n.trim().eq_ignore_ascii_case("Call-ID") || n.trim() == "i" || n.trim() == "I"
        })
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// The distinct answers for the dialog `call_id` that arrive within `within`. Earlier INVITEs'
/// final answers are retransmitted until they are acknowledged (RFC 3261 §17.2.1, Timer G);
/// they carry other Call-IDs and are left aside, and a retransmission of this message's own
/// answer is the same answer.
async fn replies(socket: &UdpSocket, call_id_of: &str, within: Duration) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(within, socket.recv(&mut buf)).await {
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        if call_id(answer.as_bytes()) == call_id_of && !out.contains(&answer) {
            out.push(answer);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_torture_messages_of_rfc_4475_and_rfc_5118_get_their_answers() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let socket = UdpSocket::bind("127.0.0.61:5060")
        .await
        .expect("127.0.0.61:5060 is free for the torture peer");
    let events_before = edge.device_events().await.len();
    let cases: Vec<Case> = [
        valid_messages(),
        invalid_messages(),
        semantic_messages(),
        ipv6_messages(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(cases.len(), 49 + 12, "every message of both RFCs");

    let mut wrong = Vec::new();
    for case in &cases {
        socket.send_to(&case.bytes, edge.udp).await.unwrap();
        let answers = replies(&socket, &call_id(&case.bytes), Duration::from_millis(250)).await;
        let got = match answers.as_slice() {
            [] => Silence,
            [one] => Status(status(one)),
            many => {
                wrong.push(format!("{}: {} answers: {many:?}", case.name, many.len()));
                continue;
            }
        };
        if got != case.expect {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}: {:?}",
                case.name,
                case.expect,
                answers.first()
            ));
            continue;
        }
        // What the answers must carry besides their status.
        let answer = answers.first().map(String::as_str).unwrap_or_default();
        match case.name {
            "bext01" => {
                let unsupported = header_values(answer, "Unsupported").join(",");
                assert!(
                    unsupported.contains("nothingSupportsThis")
                        && unsupported.contains("nothingSupportsThisEither")
                        && !unsupported.contains("noProxiesSupportThis"),
                    "{answer}"
                );
            }
            "invut" | "sdp01" => assert_eq!(
                header_values(answer, "Accept"),
                vec!["application/sdp"],
                "{answer}"
            ),
            "regaut01" => assert!(
                header_values(answer, "WWW-Authenticate")
                    .iter()
                    .all(|c| c.starts_with("Digest ")),
                "{answer}"
            ),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Nothing any of those REGISTERs carried reached the log, and the edge still serves.
    assert_eq!(edge.device_events().await.len(), events_before);
    let ping = wire(
        "OPTIONS sip:torture.test SIP/2.0
Via: SIP/2.0/UDP host1.torture.test;branch=z9hG4bK-after-torture
From: <sip:probe@torture.test>;tag=p
To: <sip:torture.test>
Call-ID: after-torture
CSeq: 1 OPTIONS
Content-Length: 0

",
    );
    socket.send_to(&ping, edge.udp).await.unwrap();
    let answers = replies(&socket, "after-torture", Duration::from_millis(500)).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(status(&answers[0]), 200, "{}", answers[0]);
    edge.shutdown().await;
}
