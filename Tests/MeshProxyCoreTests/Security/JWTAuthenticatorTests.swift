import Crypto
import CryptoExtras
import Foundation
import NIOHTTP1
import Testing
@testable import MeshProxyCore

/// Tokens signed here with keys made here (P-256, RSA, Ed25519), verified as Envoy's jwt_authn.
@Suite("RequestAuthentication: JWT verification (Envoy's order and texts)")
struct JWTAuthenticatorTests {
    static let ec = P256.Signing.PrivateKey()
    static let ed = Curve25519.Signing.PrivateKey()
    static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let issuer = "https://auth.mcp.example.com"

    static func b64(_ data: Data) -> String { JWT.base64URLEncoded(data) }

    static var jwks: String {
        let point = ec.publicKey.rawRepresentation
        let rsaKey = rsa.publicKey
        let primitives = try! rsaKey.getKeyPrimitives()
        let (n, e) = (primitives.modulus, primitives.publicExponent)
        return """
            {"keys": [
              {"kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "x": "\(b64(point.prefix(32)))", "y": "\(b64(point.suffix(32)))"},
              {"kty": "RSA", "kid": "rsa-1", "n": "\(b64(n))", "e": "\(b64(e))"},
              {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": "\(b64(ed.publicKey.rawRepresentation))"}
            ]}
            """
    }

    /// A token: header and claims as JSON, signed with `alg`'s key (or `signature` as given).
    static func token(alg: String = "ES256", kid: String? = "ec-1", claims: [String: Any], signature: Data? = nil) -> String {
        var header: [String: Any] = ["alg": alg, "typ": "JWT"]
        if let kid { header["kid"] = kid }
        let input = b64(try! JSONSerialization.data(withJSONObject: header)) + "." + b64(try! JSONSerialization.data(withJSONObject: claims))
        let data = Data(input.utf8)
        let signed: Data
        switch alg {
        case "ES256": signed = try! ec.signature(for: SHA256.hash(data: data)).rawRepresentation
        case "RS256": signed = try! rsa.signature(for: SHA256.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation
        case "PS256": signed = try! rsa.signature(for: SHA256.hash(data: data), padding: .PSS).rawRepresentation
        case "EdDSA": signed = try! ed.signature(for: data)
        default: signed = Data()
        }
        return input + "." + b64(signature ?? signed)
    }

    static func claims(exp: Double? = 3600, nbf: Double? = nil, aud: Any = "mcp-organization", iss: String = issuer) -> [String: Any] {
        let now = Date().timeIntervalSince1970
        var claims: [String: Any] = ["iss": iss, "sub": "alice", "aud": aud, "groups": ["admins", "dev"], "org": ["team": "payments"]]
        if let exp { claims["exp"] = now + exp }
        if let nbf { claims["nbf"] = now + nbf }
        return claims
    }

    func authenticator(_ configure: (inout RequestAuthentication.JWTRule) -> Void = { _ in }) -> JWTAuthenticator {
        var rule = RequestAuthentication.JWTRule(issuer: Self.issuer, jwks: Self.jwks)
        rule.audiences = ["https://mcp-organization/"]
        configure(&rule)
        return JWTAuthenticator([RequestAuthentication(jwtRules: [rule])])
    }

    func outcome(_ token: String?, _ auth: JWTAuthenticator? = nil, header: String = "authorization", prefix: String = "Bearer ") -> JWTAuthenticator.Outcome {
        var headers = HTTPHeaders()
        if let token { headers.add(name: header, value: prefix + token) }
        return (auth ?? authenticator()).authenticate(headers, path: "/")
    }

    @Test("Valid ES256, RS256, PS256 and EdDSA tokens give iss/sub; no token passes with no principal; the token is removed unless forwardOriginalToken")
    func valid() throws {
        for (alg, kid) in [("ES256", "ec-1"), ("RS256", "rsa-1"), ("PS256", "rsa-1"), ("EdDSA", "ed-1")] {
            guard case .verified(let principal, _, let removing) = outcome(Self.token(alg: alg, kid: kid, claims: Self.claims())) else {
                Issue.record("\(alg) not verified: \(outcome(Self.token(alg: alg, kid: kid, claims: Self.claims())))"); continue
            }
            #expect(principal.principal == "\(Self.issuer)/alice" && removing == "authorization", "\(alg)")
        }
        #expect(outcome(nil) == .noToken)
        guard case .verified(_, _, let kept) = outcome(Self.token(claims: Self.claims()), authenticator { $0.forwardOriginalToken = true }) else { Issue.record("no"); return }
        #expect(kept == nil)
    }

    @Test("Envoy's refusals: expired, not yet valid (60 s skew both ways), wrong audience 403, unknown issuer, unknown kid, tampered signature, alg none, garbage")
    func refusals() {
        func rejected(_ token: String, _ auth: JWTAuthenticator? = nil) -> (Int, String)? {
            if case .rejected(let status, let message) = outcome(token, auth) { return (status, message) }
            return nil
        }
        #expect(rejected(Self.token(claims: Self.claims(exp: -120)))! == (401, "Jwt is expired"))
        #expect(rejected(Self.token(claims: Self.claims(exp: -30))) == nil)  // within the skew
        #expect(rejected(Self.token(claims: Self.claims(nbf: 120)))! == (401, "Jwt not yet valid"))
        #expect(rejected(Self.token(claims: Self.claims(nbf: 30))) == nil)
        #expect(rejected(Self.token(claims: Self.claims(aud: ["other"])))! == (403, "Audiences in Jwt are not allowed"))
        #expect(rejected(Self.token(claims: Self.claims(aud: "http://mcp-organization"))) == nil)  // scheme and slash ignored
        #expect(rejected(Self.token(claims: Self.claims(iss: "https://evil.example.com")))! == (401, "Jwt issuer is not configured"))
        #expect(rejected(Self.token(kid: "nope", claims: Self.claims()))! == (401, "Jwks doesn't have key to match kid or alg from Jwt"))
        #expect(rejected(Self.token(claims: Self.claims(), signature: Data(repeating: 7, count: 64)))! == (401, "Jwt verification fails"))
        #expect(rejected(Self.token(alg: "none", kid: nil, claims: Self.claims(), signature: Data()))! == (401, "Jwt header [alg] is not supported"))
        #expect(rejected("not-a-token")?.0 == 401)
        // A JWKS that could not be had: every token is refused (fail closed).
        let empty = JWTAuthenticator([RequestAuthentication(jwtRules: [.init(issuer: Self.issuer, jwks: "{\"keys\": []}")])])
        #expect(rejected(Self.token(claims: Self.claims()), empty)?.0 == 401)
    }

    @Test("A verified token is kept: the same token again skips the signature check but not the clock or the issuer; other keys (a rule with another JWKS, a refetched remote JWKS) check it again")
    func verifiedTokens() throws {
        let cache = VerifiedTokens(capacity: 2)
        var rule = RequestAuthentication.JWTRule(issuer: Self.issuer, jwks: Self.jwks)
        rule.audiences = ["mcp-organization"]
        let auth = JWTAuthenticator([RequestAuthentication(jwtRules: [rule])], verified: cache)
        let token = Self.token(claims: Self.claims(exp: 100))
        guard case .verified = outcome(token, auth) else { Issue.record("not verified"); return }
        #expect(cache.count == 1)
        guard case .verified = outcome(token, auth) else { Issue.record("not verified from the cache"); return }
        // Kept, yet its time is checked on every use.
        var headers = HTTPHeaders()
        headers.add(name: "authorization", value: "Bearer \(token)")
        #expect(auth.authenticate(headers, path: "/", now: Date().addingTimeInterval(300)) == .rejected(status: 401, message: "Jwt is expired"))
        // The same text under a rule whose JWKS lacks the key: checked again, refused.
        var other = rule
        other.jwks = #"{"keys": []}"#
        let strict = JWTAuthenticator([RequestAuthentication(jwtRules: [other])], verified: cache)
        #expect(outcome(token, strict) == .rejected(status: 401, message: "Jwks doesn't have key to match kid or alg from Jwt"))
        // A remote JWKS replaced by keys without this one: the cached verification no longer holds.
        let remote = RemoteJWKS(uri: "https://issuer.example/jwks.json")
        remote.update(try JWKSet.parse(Data(Self.jwks.utf8)).get())
        var fetched = rule
        fetched.jwks = nil
        fetched.jwksUri = remote.uri
        let viaRemote = JWTAuthenticator([RequestAuthentication(jwtRules: [fetched])], remote: [remote.uri: remote], verified: cache)
        guard case .verified = outcome(token, viaRemote) else { Issue.record("not verified by the remote keys"); return }
        remote.update(JWKSet(keys: []))
        #expect(outcome(token, viaRemote) == .rejected(status: 401, message: "Jwks doesn't have key to match kid or alg from Jwt"))
        // Bounded: past its capacity it starts over.
        for i in 0..<3 { _ = outcome(Self.token(claims: Self.claims(exp: Double(200 + i))), auth) }
        #expect(cache.count <= 2)
    }

    @Test("A connection's last token: the same bytes again are taken as verified, yet the clock is checked; another token (tampered) is verified on its own; keys replaced since check it again")
    func lastToken() throws {
        let remote = RemoteJWKS(uri: "https://issuer.example/jwks.json")
        remote.update(try JWKSet.parse(Data(Self.jwks.utf8)).get())
        var rule = RequestAuthentication.JWTRule(issuer: Self.issuer)
        rule.jwksUri = remote.uri
        let auth = JWTAuthenticator([RequestAuthentication(jwtRules: [rule])], remote: [remote.uri: remote])
        let token = Self.token(claims: Self.claims(exp: 100))
        func headers(_ token: String) -> HTTPHeaders { HTTPHeaders([("authorization", "Bearer \(token)")]) }
        var last: JWTAuthenticator.LastToken?
        guard case .verified = auth.authenticate(headers(token), path: "/", last: &last) else { Issue.record("not verified"); return }
        #expect(last != nil)
        guard case .verified = auth.authenticate(headers(token), path: "/", last: &last) else { Issue.record("not verified again"); return }
        #expect(auth.authenticate(headers(token), path: "/", now: Date().addingTimeInterval(300), last: &last) == .rejected(status: 401, message: "Jwt is expired"))
        var tampered = Array(token)
        tampered[tampered.count - 3] = tampered[tampered.count - 3] == "A" ? "B" : "A"
        #expect(auth.authenticate(headers(String(tampered)), path: "/", last: &last) == .rejected(status: 401, message: "Jwt verification fails"))
        guard case .verified = auth.authenticate(headers(token), path: "/", last: &last) else { Issue.record("the good token after a bad one"); return }
        remote.update(JWKSet(keys: []))
        #expect(auth.authenticate(headers(token), path: "/", last: &last) == .rejected(status: 401, message: "Jwks doesn't have key to match kid or alg from Jwt"))
    }

    @Test("fromHeaders with a prefix, fromParams; outputPayloadToHeader and outputClaimToHeaders (nested claims); AuthorizationPolicy requestPrincipals and request.auth.claims")
    func locationsOutputsAndPolicy() throws {
        let custom = authenticator { rule in
            rule.fromHeaders = [.init(name: "x-jwt", prefix: "Token ")]
            rule.fromParams = ["jwt"]
            rule.outputPayloadToHeader = "x-jwt-payload"
            rule.outputClaimToHeaders = [.init(header: "x-sub", claim: "sub"), .init(header: "x-team", claim: "org.team")]
        }
        #expect(outcome(Self.token(claims: Self.claims()), custom) == .noToken)  // Authorization is not one of its places
        guard case .verified(let principal, let headers, let removing) = outcome(Self.token(claims: Self.claims()), custom, header: "x-jwt", prefix: "Token ") else {
            Issue.record("not verified"); return
        }
        #expect(removing == "x-jwt")
        #expect(headers.first { $0.name == "x-sub" }?.value == "alice" && headers.first { $0.name == "x-team" }?.value == "payments")
        #expect(headers.contains { $0.name == "x-jwt-payload" })
        guard case .verified = custom.authenticate(HTTPHeaders(), path: "/x?jwt=\(Self.token(claims: Self.claims()))") else { Issue.record("param"); return }
        // What AuthorizationPolicy sees of it.
        var request = AuthorizationRequest(principal: nil, sourceIP: "10.0.0.1", destinationIP: "10.0.0.2", listenerPort: 15443, servicePort: 80,
                                           serverName: "", http: .init(host: "a", method: "GET", path: "/", headers: HTTPHeaders()))
        func allows(_ rule: AuthorizationPolicy.Rule) -> Bool {
            let engine = AuthorizationEngine(policies: [AuthorizationPolicy(action: .allow, rules: [rule], namespace: "istio-system")])
            let applying = engine.applicable(gatewayLabels: [:], gatewayNamespace: "istio-system", serviceNamespace: "default", serviceLabels: [])
            return AuthorizationEngine.decide(request, policies: applying).allowed
        }
        var source = AuthorizationPolicy.Source()
        source.requestPrincipals = ["*"]
        #expect(!allows(.init(from: [source])))  // a token is required, none came: 403
        request.requestPrincipal = principal
        #expect(allows(.init(from: [source])))
        source.requestPrincipals = ["\(Self.issuer)/alice"]
        #expect(allows(.init(from: [source])))
        source.requestPrincipals = ["\(Self.issuer)/bob"]
        #expect(!allows(.init(from: [source])))
        #expect(allows(.init(when: [.init(key: "request.auth.claims[groups]", values: ["admins"])])))
        #expect(allows(.init(when: [.init(key: "request.auth.claims[org][team]", values: ["pay*"])])))
        #expect(!allows(.init(when: [.init(key: "request.auth.claims[groups]", values: ["root"])])))
        // The payload an entry gateway hands on reads back as the same principal.
        #expect(RequestPrincipal(payload: principal.payload)?.principal == principal.principal)
    }
}
