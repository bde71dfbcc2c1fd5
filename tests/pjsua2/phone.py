"""A softphone driven by a test: pjsua2 (PyPI pjsua2-python, null audio device) registers
one account with SERVER (also its outbound proxy), then either

    python3 phone.py SERVER USER PASSWORD REALM SECONDS register
        stops once the registrar answered, or
    python3 phone.py SERVER USER PASSWORD REALM SECONDS answer
        answers the first call that rings it (180, then 200) and waits for the far end to
        hang up, or
    python3 phone.py SERVER USER PASSWORD REALM SECONDS call URI TALK
        calls URI once registered, and hangs up TALK seconds after the answer, or
    python3 phone.py SERVER USER PASSWORD REALM SECONDS message
        stays registered until a MESSAGE comes (the edge asking the user to call in), or
    python3 phone.py SERVER USER PASSWORD REALM SECONDS hold URI STEP
        calls URI, talks STEP seconds, puts the call on hold (a re-INVITE, a=sendonly) for
        STEP seconds, takes it off hold for STEP seconds, then hangs up; prints the RTP
        packets it received in each of the three spans (rx talking: / rx held: / rx resumed:), or
    python3 phone.py SERVER USER PASSWORD REALM SECONDS transfer URI TARGET AFTER
        calls URI (or, with URI `-`, answers the first call), and AFTER seconds after the
        answer transfers the call to TARGET (REFER, a blind transfer); prints each NOTIFY of
        the transfer's progress (transfer: CODE) and ends once the call is over, or
    python3 phone.py SERVER USER PASSWORD REALM SECONDS attended TARGET AFTER
        answers the first call, and AFTER seconds after the answer holds it and calls TARGET;
        a second after TARGET answers, transfers the first call to it (REFER with Replaces
        naming the second call: an attended transfer); ends once both calls are over.

The RTP packets received on the call are printed as the phone ends (rx call: N).

Prints one line per step (registration: CODE REASON / incoming: FROM / confirmed /
disconnected: CODE REASON / message: BODY, then call-in: the Ringledger-Call-In header).
Exits 0 when the registration got 200 (register), a call was set up (confirmed) and then
ended within SECONDS, or a MESSAGE came within SECONDS (message); 1 otherwise. Used by tests/tests/pjsua2.rs
and tests/tests/phones_call.rs.
"""
import os
import sys
import time

import pjsua2 as pj


class Call(pj.Call):
    def __init__(self, account, call_id):
        super().__init__(account, call_id)
        self.confirmed = False
        self.disconnected = None
        self.media = None
        self.transfer_final = None
        # RTP packets received while the call was up (read while it is: its stream goes
        # with it).
        self.rx = 0

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO:
                self.media = media.status
                print(f"media: {media.status}", flush=True)

    def received(self):
        """RTP packets received on the call's audio stream so far."""
        try:
            return self.getStreamStat(0).rtcp.rxStat.pkt
        except pj.Error:
            return 0

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
            print("confirmed", flush=True)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = (info.lastStatusCode, info.lastReason)
            print(f"disconnected: {info.lastStatusCode} {info.lastReason}", flush=True)

    def onCallTransferStatus(self, prm):
        print(f"transfer: {prm.statusCode} {prm.reason}", flush=True)
        if prm.finalNotify:
            self.transfer_final = prm.statusCode


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.code = None
        self.call = None
        self.second = None
        self.message = None

    def onRegState(self, prm):
        if self.code is None or prm.code != self.code:
            print(f"registration: {prm.code} {prm.reason}", flush=True)
        self.code = prm.code

    def onInstantMessage(self, prm):
        print(f"message: {prm.msgBody}", flush=True)
        for line in prm.rdata.wholeMsg.splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "ringledger-call-in":
                print(f"call-in: {value.strip()}", flush=True)
        self.message = prm.msgBody

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        print(f"incoming: {call.getInfo().remoteUri}", flush=True)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)
        self.call = call


def main():
    server, user, password, realm = sys.argv[1:5]
    seconds = float(sys.argv[5])
    mode = sys.argv[6]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    # PJSUA2_LOG=5 shows every SIP message (for debugging a test).
    level = int(os.environ.get("PJSUA2_LOG", "1"))
    cfg.logConfig.level = level
    cfg.logConfig.consoleLevel = level
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2 ringledger-tests"
    # Silence is sent as packets too (no voice activity detection): media is measurable.
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    transport = pj.TransportConfig()
    transport.port = 0
    transport.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    ep.audDevManager().setNullDev()
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{user}@{realm}"
    acfg.regConfig.registrarUri = f"sip:{server}"
    acfg.sipConfig.proxies.append(f"sip:{server};lr")
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    account = Account()
    account.create(acfg)
    deadline = time.time() + seconds
    hang_up_at = None
    # hold mode: (phase, when it ends, packets received when it began); transfer mode: when
    # the transfer is to be sent, then "sent"; attended mode: when the consultation call is
    # to be made, "consulting", ("talking", when the transfer is to be sent), "sent"
    phase = None
    counts = {}
    while time.time() < deadline:
        ep.libHandleEvents(20)
        if mode == "register" and account.code is not None and account.code >= 200:
            break
        if mode == "message" and account.message is not None:
            break
        calls_out = mode in ("call", "hold") or (mode == "transfer" and sys.argv[7] != "-")
        if calls_out and account.call is None and account.code == 200:
            call = Call(account, pj.PJSUA_INVALID_ID)
            call.makeCall(sys.argv[7], pj.CallOpParam(True))
            account.call = call
        call = account.call
        if call is None:
            continue
        if mode == "attended":
            second = account.second
            if call.confirmed and phase is None:
                phase = time.time() + float(sys.argv[8])
            if isinstance(phase, float) and time.time() >= phase:
                call.setHold(pj.CallOpParam(True))
                second = Call(account, pj.PJSUA_INVALID_ID)
                second.makeCall(sys.argv[7], pj.CallOpParam(True))
                account.second = second
                phase = "consulting"
            if phase == "consulting" and second.confirmed:
                phase = ("talking", time.time() + 1.0)
            if isinstance(phase, tuple) and time.time() >= phase[1]:
                call.xferReplaces(second, pj.CallOpParam(True))
                print("transfer sent", flush=True)
                phase = "sent"
            if call.disconnected is not None and (
                second is None or second.disconnected is not None
            ):
                break
            continue
        if call.disconnected is not None:
            break
        if call.confirmed:
            call.rx = max(call.rx, call.received())
        if mode == "transfer" and call.confirmed and phase is None:
            phase = time.time() + float(sys.argv[9])
        if mode == "transfer" and phase not in (None, "sent") and time.time() >= phase:
            call.xfer(sys.argv[8], pj.CallOpParam(True))
            print("transfer sent", flush=True)
            phase = "sent"
        if mode == "call" and call.confirmed and hang_up_at is None:
            hang_up_at = time.time() + float(sys.argv[8])
        if mode == "hold" and call.confirmed and hang_up_at is None:
            step = float(sys.argv[8])
            now = time.time()
            if phase is None:
                phase = ("talking", now + step, call.received())
            name, until, start = phase
            if name in ("talking", "held", "resumed") and now >= until:
                counts[name] = call.received() - start
                print(f"rx {name}: {counts[name]}", flush=True)
                if name == "talking":
                    call.setHold(pj.CallOpParam(True))
                    phase = ("holding", None, None)
                elif name == "held":
                    # The call's default settings (one audio stream), off hold.
                    op = pj.CallOpParam(True)
                    op.opt.flag = pj.PJSUA_CALL_UNHOLD
                    call.reinvite(op)
                    phase = ("resuming", None, None)
                else:
                    hang_up_at = now
            elif name == "holding" and call.media == pj.PJSUA_CALL_MEDIA_LOCAL_HOLD:
                # On hold: packets already on their way arrive before the count begins.
                phase = ("settling-held", now + 0.5, None)
            elif name == "resuming" and call.media == pj.PJSUA_CALL_MEDIA_ACTIVE:
                phase = ("settling-resumed", now + 0.5, None)
            elif name.startswith("settling") and now >= until:
                next_name = "held" if name == "settling-held" else "resumed"
                phase = (next_name, now + step, call.received())
        if hang_up_at is not None and time.time() >= hang_up_at:
            hang_up_at = float("inf")
            call.hangup(pj.CallOpParam())
    call = account.call
    if call is not None:
        print(f"rx call: {call.rx}", flush=True)
    if mode == "register":
        ok = account.code == 200
    elif mode == "message":
        ok = account.message is not None
    elif mode == "attended":
        second = account.second
        ok = (
            call is not None
            and call.transfer_final == 200
            and second is not None
            and second.disconnected is not None
        )
        account.second = None
        del second
    elif mode == "transfer":
        ok = call is not None and call.transfer_final == 200 and call.disconnected is not None
    elif mode == "hold":
        ok = (
            call is not None
            and call.disconnected is not None
            and set(counts) == {"talking", "held", "resumed"}
        )
    else:
        ok = call is not None and call.confirmed and call.disconnected is not None
    account.call = None
    del call
    account.shutdown()
    ep.libDestroy()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
