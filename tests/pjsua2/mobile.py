"""A mobile phone behind its own carrier, driven by a test: pjsua2 (PyPI pjsua2-python, null
audio device) bound to BIND_IP (the carrier's network), calling URI as FROM (no registration:
the carrier vouches for the number), then playing STEPs once the call is answered:

    python3 mobile.py BIND_IP FROM URI SECONDS STEP...

    rfc4733:KEYS   keys sent as RFC 4733 telephone-events (pjsua2's dialDtmf)
    info:KEYS      keys sent as SIP INFO (application/dtmf-relay)
    wait:SECS      a pause
    hangup         hangs up (otherwise the far end is waited for)

Each key of a step is sent once the previous step's keys have had time to play (pjsua2
paces the telephone-events itself). Prints `confirmed`, `sent: METHOD KEYS`, `disconnected:
CODE REASON` and, at the end, `rx call: N` (RTP packets received: the edge's tones). Exits 0
when the call was answered and ended within SECONDS. Used by tests/tests/keypad.rs.
"""
import os
import sys
import time

import pjsua2 as pj


class Call(pj.Call):
    def __init__(self, account):
        super().__init__(account, pj.PJSUA_INVALID_ID)
        self.confirmed = False
        self.disconnected = None
        self.rx = 0

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
            print("confirmed", flush=True)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = (info.lastStatusCode, info.lastReason)
            print(f"disconnected: {info.lastStatusCode} {info.lastReason}", flush=True)

    def received(self):
        try:
            return self.getStreamStat(0).rtcp.rxStat.pkt
        except pj.Error:
            return 0


def main():
    bind_ip, caller, uri = sys.argv[1:4]
    seconds = float(sys.argv[4])
    steps = sys.argv[5:]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    level = int(os.environ.get("PJSUA2_LOG", "1"))
    cfg.logConfig.level = level
    cfg.logConfig.consoleLevel = level
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2 ringledger-tests mobile"
    cfg.medConfig.noVad = True
    # The null sound device drives the media clock: kept open, or pjsua closes it after a
    # second with nothing connected and the call's RTP (keys included) stops.
    cfg.medConfig.sndAutoCloseTime = -1
    ep.libInit(cfg)
    transport = pj.TransportConfig()
    transport.port = 0
    transport.boundAddress = bind_ip
    transport.publicAddress = bind_ip
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.audDevManager().setNullDev()
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{caller}@{bind_ip}"
    acfg.mediaConfig.transportConfig.boundAddress = bind_ip
    acfg.mediaConfig.transportConfig.publicAddress = bind_ip
    account = pj.Account()
    account.create(acfg)
    call = Call(account)
    call.makeCall(uri, pj.CallOpParam(True))
    deadline = time.time() + seconds
    next_step_at = None
    while time.time() < deadline:
        ep.libHandleEvents(20)
        if call.disconnected is not None:
            break
        if not call.confirmed:
            continue
        call.rx = max(call.rx, call.received())
        now = time.time()
        if next_step_at is None:
            # Let the media settle before the first key.
            next_step_at = now + 0.5
        if not steps or now < next_step_at:
            continue
        step = steps.pop(0)
        kind, _, arg = step.partition(":")
        if kind == "wait":
            next_step_at = now + float(arg)
        elif kind == "hangup":
            call.hangup(pj.CallOpParam())
            next_step_at = float("inf")
        elif kind in ("rfc4733", "info"):
            prm = pj.CallSendDtmfParam()
            prm.method = (
                pj.PJSUA_DTMF_METHOD_RFC2833 if kind == "rfc4733" else pj.PJSUA_DTMF_METHOD_SIP_INFO
            )
            prm.digits = arg
            prm.duration = 120
            call.sendDtmf(prm)
            print(f"sent: {kind} {arg}", flush=True)
            # Each key plays for its duration plus a gap before the next.
            next_step_at = now + 0.3 * len(arg) + 0.5
        else:
            print(f"unknown step {step}", flush=True)
            break
    print(f"rx call: {call.rx}", flush=True)
    ok = call.confirmed and call.disconnected is not None
    del call
    account.shutdown()
    ep.libDestroy()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
