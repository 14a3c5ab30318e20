#!/usr/bin/env python3
"""A business server written for the original system, talking to Tern unchanged.

Every request below is shaped from the original system's API (shared/original-api.md):
its controller paths, its RequestBase fields (appId, operater, clientType, imei) in the
body, its names (userId lists under the singular name, userList, messageRandom, ...),
and its signature format, the TLS-style UserSig, minted here with Python's standard
library only (zlib, hmac, base64): an implementation independent of Tern's.

Usage:
  original-client.py usersig SECRET APP_ID IDENTIFIER ISSUED TTL [tencent]
      print a UserSig (the original's field names; with `tencent`, the common signing
      libraries' TLS.sdkappid / TLS.time spelling)
  original-client.py run HTTP_ADDR APP_ID SECRET ADMIN
      run the scenario against a live Tern; prints one line per call, exits 1 on the
      first answer that is not what the original system's client expects
"""

import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request
import zlib


def usersig(secret, app_id, identifier, issued, ttl, tencent=False):
    app_key, time_key = ("TLS.sdkappid", "TLS.time") if tencent else ("TLS.appId", "TLS.expireTime")
    content = (
        f"TLS.identifier:{identifier}\n{app_key}:{app_id}\n{time_key}:{issued}\nTLS.expire:{ttl}\n"
    )
    sig = base64.b64encode(hmac.new(secret.encode(), content.encode(), hashlib.sha256).digest()).decode()
    doc = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        app_key: app_id,
        time_key: issued,
        "TLS.expire": ttl,
        "TLS.sig": sig,
    }
    packed = base64.b64encode(zlib.compress(json.dumps(doc, separators=(",", ":")).encode())).decode()
    return packed.replace("+", "*").replace("/", "-").replace("=", "_")


class Client:
    def __init__(self, addr, app_id, secret, admin):
        self.addr, self.app_id, self.secret, self.admin = addr, app_id, secret, admin
        self.sign = usersig(secret, app_id, admin, int(time.time()), 3600)

    def call(self, path, body, expect_code=200):
        # The original controller copies `identifier` into the body's `operater`; a
        # business server also sends its RequestBase fields.
        full = {"appId": self.app_id, "clientType": 0, "imei": "business-server-1"}
        full.update(body)
        q = f"appId={self.app_id}&identifier={self.admin}&userSign={self.sign}"
        req = urllib.request.Request(
            f"http://{self.addr}/v1{path}?{q}",
            data=json.dumps(full).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read())
        ok = answer.get("code") == expect_code
        print(f"{'ok ' if ok else 'BAD'} {path} -> {answer.get('code')} {answer.get('msg')}")
        if not ok:
            print(json.dumps(answer), file=sys.stderr)
            sys.exit(1)
        return answer.get("data")


def run(addr, app_id, secret, admin):
    c = Client(addr, app_id, secret, admin)
    users = [{"userId": u, "nickName": u.upper(), "password": "p4ss", "friendAllowType": 1} for u in ("oa", "ob", "oc")]
    d = c.call("/user/importUser", {"userData": users})
    assert d["successId"] == ["oa", "ob", "oc"], d
    d = c.call("/user/data/getUserInfo", {"userIds": ["oa"]})
    assert "password" not in json.dumps(d), "the password is never returned"
    c.call("/user/data/modifyUserInfo", {"userId": "oa", "nickName": "A", "password": "new"})
    d = c.call("/friendship/addFriend", {"fromId": "oa", "toItem": {"toId": "ob", "remark": "b", "addSource": "qr"}})
    assert d["result"] == 1, d
    d = c.call("/friendship/checkFriend", {"fromId": "oa", "toIds": ["ob", "oc"], "checkType": 2})
    assert [r["status"] for r in d["resultList"]] == [1, 4], d
    # The original's sync calls name the user in `operater`, not `fromId`.
    d = c.call("/friendship/syncFriendshipList", {"operater": "oa", "lastSequence": 0, "maxLimit": 100.0})
    assert [e["toId"] for e in d["dataList"]] == ["ob"], d
    c.call("/friendship/updateFriend", {"fromId": "oa", "toItem": {"toId": "ob", "remark": "bee"}})
    c.call("/friendship/addBlack", {"fromId": "oa", "toId": "oc"})
    c.call("/friendship/deleteBlack", {"fromId": "oa", "toId": "oc"})
    d = c.call("/friendship/getAllFriendShip", {"fromId": "oa"})
    assert d["dataList"][0]["remark"] == "bee", d
    now = int(time.time() * 1000)
    d = c.call(
        "/message/send",
        {
            "messageId": "m-1",
            "fromId": "oa",
            "toId": "ob",
            "messageRandom": -12345,
            "messageTime": now,
            "messageBody": "hello from the original",
            "badgeMode": 1,
            "messageLifeTime": 3600,
        },
    )
    key = d["messageKey"]
    d = c.call("/message/syncOfflineMessage", {"operater": "ob", "lastSequence": 0, "maxLimit": 100})
    m = d["dataList"][0]
    assert (m["messageKey"], m["messageRandom"], m["clientTime"], m["badgeMode"]) == (key, -12345, now, 1), m
    d = c.call("/user/queryUserOnlineStatus", {"userList": ["oa", "ob"]})
    assert [s["online"] for s in d["statusList"]] == [False, False], d
    c.call("/user/qeuryOnlineStatus", {"userList": ["oa"]})
    c.call("/friendship/deleteFriend", {"fromId": "oa", "toId": "ob"})
    c.call("/friendship/deleteAllFriend", {"fromId": "ob"})
    d = c.call("/user/deleteUser", {"userId": ["oc"]})
    assert d["successId"] == ["oc"], d
    # A typo is still refused, naming the field.
    c.call("/friendship/checkFriend", {"fromId": "oa", "toIds": [], "chekType": 1}, expect_code=90001)
    # A business server that signs a user's login with the same library.
    user_sign = usersig(secret, app_id, "oa", int(time.time()), 600)
    q = f"appId={app_id}&identifier=oa&userSign={user_sign}"
    req = urllib.request.Request(
        f"http://{addr}/v1/user/login?{q}",
        data=json.dumps({"userId": "oa", "appId": app_id, "clientType": 1}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    assert answer["code"] == 200 and "ip" in answer["data"] and "port" in answer["data"], answer
    print("ok  /user/login -> 200 (UserSig of the user)")
    print("original client: every call answered as expected")


def main(argv):
    if len(argv) >= 6 and argv[0] == "usersig":
        secret, app_id, ident, issued, ttl = argv[1], int(argv[2]), argv[3], int(argv[4]), int(argv[5])
        print(usersig(secret, app_id, ident, issued, ttl, tencent=len(argv) > 6 and argv[6] == "tencent"))
    elif len(argv) == 5 and argv[0] == "run":
        run(argv[1], int(argv[2]), argv[3], argv[4])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
