"""Registers one account with a SIP registrar using pjsua2 (PyPI pjsua2-python, null audio
device) and prints the final status code of the registration.

    python3 register.py SERVER USER PASSWORD REALM [SECONDS]

Exits 0 when the registrar answered 200, 1 otherwise. Used by tests/tests/pjsua2.rs.
"""
import sys
import time

import pjsua2 as pj


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.code = None
        self.reason = ""

    def onRegState(self, prm):
        self.code = prm.code
        self.reason = prm.reason


def main():
    server, user, password, realm = sys.argv[1:5]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2 ringledger-tests"
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
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    account = Account()
    account.create(acfg)
    deadline = time.time() + seconds
    while time.time() < deadline and (account.code is None or account.code < 200):
        ep.libHandleEvents(20)
    code, reason = account.code, account.reason
    print(f"registration: {code} {reason}", flush=True)
    account.shutdown()
    ep.libDestroy()
    sys.exit(0 if code == 200 else 1)


if __name__ == "__main__":
    main()
