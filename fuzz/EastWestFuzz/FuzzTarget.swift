import Crypto
import Federation
import Foundation
import NIOHTTP1
import MeshProxyCore
import NIOCore
import NIOEmbedded
import NIOTLS

/// What EastWest reads from strangers, each as a libFuzzer target. Beyond "nothing traps", each
/// target checks what a user relies on: a server name that parses round-trips through Istio's
/// form; a gossip frame that decodes encodes back to the same message; a config error names the
/// file and a line; an admin body that is accepted can cross the federation wire whole.
enum FuzzTarget: String, CaseIterable, Sendable {
    /// The bytes before the TLS handshake on 15443: the pre-handshake guard, NIOTLS's SNI
    /// reader, and our server-name parser.
    case clientHello = "client-hello"
    /// A federation connection's stream: framing, then the message codec.
    case gossip
    /// A gateway config, a topology and an Istio policy file, as YAML.
    case config
    /// The JSON bodies the admin listener takes (catalog registration, faults).
    case adminJSON = "admin-json"
    /// A bearer token a client sends (RequestAuthentication), and a JWKS document.
    case jwt
    /// What an ext-authz gRPC provider answers: a CheckResponse in its gRPC frame.
    case extAuthzGRPC = "ext-authz-grpc"

    /// Runs one input; returns what happened, for the corpus replay to show.
    @discardableResult
    func run(_ bytes: [UInt8]) -> String {
        switch self {
        case .clientHello: Self.clientHello(bytes)
        case .gossip: Self.gossip(bytes)
        case .config: Self.config(bytes)
        case .adminJSON: Self.adminJSON(bytes)
        case .jwt: Self.jwt(bytes)
        case .extAuthzGRPC: Self.extAuthzGRPC(bytes)
        }
    }

    /// The key the fuzzing issuer trusts: made here, so no input can have been signed by it.
    static let jwtKey = P256.Signing.PrivateKey()
    static let jwtAuthenticator: JWTAuthenticator = {
        let point = jwtKey.publicKey.rawRepresentation
        let b64 = JWT.base64URLEncoded
        var rule = RequestAuthentication.JWTRule(issuer: "https://issuer.example",
                                                 jwks: #"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"\#(b64(point.prefix(32)))","y":"\#(b64(point.suffix(32)))"}]}"#)
        rule.audiences = ["fuzz"]
        rule.outputClaimToHeaders = [.init(header: "x-sub", claim: "sub"), .init(header: "x-deep", claim: "a.b.c")]
        rule.outputPayloadToHeader = "x-payload"
        return JWTAuthenticator([RequestAuthentication(jwtRules: [rule])])
    }()

    /// The bytes as a token (header, query parameter) and as a JWKS document: nothing traps,
    /// and nothing the fuzzer wrote verifies (it never had the key).
    static func jwt(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes, as: UTF8.self).filter { $0 != "\r" && $0 != "\n" }
        var outcomes: [String] = []
        for (headers, path) in [(HTTPHeaders([("authorization", "Bearer \(text)")]), "/"),
                                (HTTPHeaders(), "/?access_token=\(text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")")] {
            let outcome = jwtAuthenticator.authenticate(headers, path: path)
            if case .verified = outcome { preconditionFailure("a token signed by no trusted key verified: \(text)") }
            outcomes.append("\(outcome)")
        }
        switch JWKSet.parse(Data(bytes)) {
        case .success(let set): outcomes.append("jwks with \(set.keys.count) keys")
        case .failure(let problem): outcomes.append("jwks refused: \(problem.message)")
        }
        return outcomes.joined(separator: "; ")
    }

    static let grpcAuthorizer = ExternalAuthorizer(MeshConfig.ExtensionProvider(name: "fuzz", envoyExtAuthzGrpc: .init(
        service: "ext-authz.foo.svc.cluster.local", port: ProtoUInt32(9000), timeout: nil, failOpen: nil, statusOnError: nil)))

    /// The bytes as a provider's gRPC answer (framed as they are, and framed by us): nothing
    /// traps; what an allowed answer puts on the request has a name, lower-cased; a denial's
    /// status is an HTTP status.
    static func extAuthzGRPC(_ bytes: [UInt8]) -> String {
        let length = UInt32(bytes.count)
        var outcomes: [String] = []
        for body in [bytes, [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + bytes] {
            let verdict = grpcAuthorizer.grpcVerdict(status: 200, headers: [:], trailers: ["grpc-status": "0"], body: body)
            switch verdict {
            case .allowed(let allowed):
                for header in allowed.requestHeaders { precondition(!header.name.isEmpty && header.name == header.name.lowercased()) }
            case .denied(let status, _, _):
                precondition(status > 0)
            case .failed:
                break
            }
            outcomes.append("\(verdict)")
        }
        return outcomes.joined(separator: "; ")
    }

    static func clientHello(_ bytes: [UInt8]) -> String {
        let channel = EmbeddedChannel()
        // The SNI callback must not hold the channel (as the listener's may: a socket channel's
        // close empties its pipeline, an embedded one's only once its loop runs again).
        let eventLoop = channel.eventLoop
        var outcome = "needs more bytes"
        let guardHandler = PreHandshakeGuard(timeout: .seconds(10), pending: nil) { reason in outcome = "refused: \(reason)" }
        let sni = ByteToMessageHandler(SNIHandler { result in
            switch result {
            case .fallback:
                outcome = "no server name"
            case .hostname(let name):
                guardHandler.serverNameRead()
                do throws(ServerNameError) {
                    let parsed = try ServerName(parsing: name)
                    // The form a gateway sends onward must mean the same route.
                    if let port = parsed.port {
                        let onward = try ServerName(parsing: ServerName.istio(host: parsed.host, port: port, subset: parsed.subset).istioForm)
                        precondition(onward == parsed, "\(name) → \(onward) does not round-trip")
                    }
                    outcome = "server name \(parsed)"
                } catch {
                    precondition(!error.description.isEmpty)
                    outcome = "no route: \(error)"
                }
            }
            return eventLoop.makeSucceededVoidFuture()
        })
        do {
            try channel.pipeline.syncOperations.addHandler(guardHandler)
            try channel.pipeline.syncOperations.addHandler(sni)
            // Delivered as two reads, so partial-header paths run too.
            let split = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[split...]))
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        } catch {
            outcome = "closed: \(error)"
        }
        _ = try? channel.finish()
        return outcome
    }

    static func gossip(_ bytes: [UInt8]) -> String {
        var stream = ByteBuffer(bytes: bytes)
        var decoded = 0, dropped = 0
        while true {
            let frame: ByteBuffer?
            do {
                frame = try GossipFrameDecoder.nextFrame(&stream)
            } catch {
                return "\(decoded) decoded, \(dropped) dropped, then the stream was closed: \(error)"
            }
            guard let frame else { break }
            do {
                let message = try GossipCodec.decode(frame)
                let again = try GossipCodec.decode(GossipCodec.encode(message))
                precondition(again == message, "a decoded message does not survive encode and decode: \(message) → \(again)")
                decoded += 1
            } catch {
                precondition(!error.reason.isEmpty)
                dropped += 1
            }
        }
        return "\(decoded) decoded, \(dropped) dropped, \(stream.readableBytes) bytes waiting"
    }

    static func config(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes, as: UTF8.self)
        var outcomes: [String] = []
        func check(_ errors: ConfigErrors, file: String) {
            for error in errors.errors {
                precondition(error.file == file, "an error names \(error.file), not \(file)")
                precondition(error.line >= 0 && error.column >= 0, "line \(error.line) column \(error.column)")
                precondition(!error.message.isEmpty)
            }
            outcomes.append("\(file): \(errors.errors.count) errors")
        }
        do {
            let config = try ConfigLoader.load(GatewayConfig.self, yaml: text, file: "gateway.yaml")
            _ = PolicyCompiler.compile(config: config)
            outcomes.append("gateway.yaml: valid")
        } catch { check(error, file: "gateway.yaml") }
        do {
            _ = try ConfigLoader.load(Topology.self, yaml: text, file: "topology.yaml")
            outcomes.append("topology.yaml: valid")
        } catch { check(error, file: "topology.yaml") }
        do {
            let loaded = try IstioPolicyLoader.load(yaml: text, file: "policy.yaml")
            let compiled = PolicyCompiler.compile(config: .fuzzGateway, resources: loaded)
            for rule in loaded.destinationRules {
                precondition(compiled.rule(for: rule.host) != nil, "rule for \(rule.host) not found after compiling")
            }
            outcomes.append("policy.yaml: \(loaded.destinationRules.count) rules")
        } catch { check(error, file: "policy.yaml") }
        return outcomes.joined(separator: "; ")
    }

    static func adminJSON(_ bytes: [UInt8]) -> String {
        var outcomes: [String] = []
        do {
            let registration = try CatalogRegistration(json: bytes)
            // What the admin API accepts is announced to every cluster: it must cross whole.
            let entry = CatalogEntry(key: registration.key, version: 1, record: registration.record)
            let delta = CatalogDelta(origin: MemberID("fuzz"), cluster: "east", generation: 1, since: 0, through: 1, isSnapshot: false, entries: [entry])
            let message = GossipMessage.catalogDeltas(from: MemberID("fuzz"), deltas: [delta])
            let again = try GossipCodec.decode(GossipCodec.encode(message))
            precondition(again == message, "an accepted registration does not cross the wire whole: \(message) → \(again)")
            outcomes.append("registration accepted")
        } catch {
            outcomes.append("registration refused: \(error)")
        }
        do {
            let fault = try FaultRequest.validated(json: bytes)
            precondition(!fault.target.isEmpty && fault.duration.duration > .zero && fault.duration.duration <= .seconds(3600))
            outcomes.append("fault accepted")
        } catch {
            outcomes.append("fault refused: \(error)")
        }
        return outcomes.joined(separator: "; ")
    }
}

extension GatewayConfig {
    /// The gateway the policy target compiles resources for.
    static let fuzzGateway = try! ConfigLoader.load(GatewayConfig.self, yaml: """
        name: fuzz-gw
        cluster: east
        listen: 127.0.0.1:15443
        tls: {certificateChain: a, privateKey: b, rootCertificate: c}
        """, file: "fuzz-gateway.yaml")
}

extension FuzzTarget {
    /// Inputs built from real values, for the seed corpus (`EastWestFuzz TARGET --write-seeds DIR`):
    /// the fuzzer starts from what peers and admins really send, not from nothing.
    var generatedSeeds: [String: [UInt8]] {
        switch self {
        case .gossip:
            let a = MemberID("east-gw-1"), b = MemberID("west-gw-1")
            let address = HostPort(host: "127.0.1.1", port: 15443)
            let updates = [MemberUpdate(id: a, address: address, cluster: "east", incarnation: 3, state: .alive),
                           MemberUpdate(id: b, address: HostPort(host: "127.0.2.1", port: 15443), cluster: "west", incarnation: 1,
                                        state: .suspect, accuser: a)]
            let key = CatalogKey(host: "echo.default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "127.0.1.10", port: 8080))
            let entry = CatalogEntry(key: key, version: 7, record: CatalogRecord(locality: Locality(region: "us-east1", zone: "a"),
                                                                              labels: ["version": "v1"], protocol: .http))
            let delta = CatalogDelta(origin: a, cluster: "east", generation: 9, since: 0, through: 7, isSnapshot: true,
                                     entries: [entry, CatalogEntry(key: key, version: 8, record: nil)])
            let messages: [String: GossipMessage] = [
                "ping": .ping(sequence: 1, from: a, fromAddress: address, target: b, updates: updates),
                "ack": .ack(sequence: 1, from: b, updates: []),
                "ping-request": .pingRequest(sequence: 2, from: a, fromAddress: address, target: b,
                                             targetAddress: HostPort(host: "127.0.2.1", port: 15443), updates: updates),
                "nack": .nack(sequence: 2, from: b),
                "gossip": .gossip(from: a, updates: updates),
                "push-pull": .pushPull(from: a, members: updates, isReply: true),
                "digest": .catalogDigest(from: a, fromAddress: address, digest: [a: OriginVersion(generation: 9, version: 7)], isReply: false),
                "deltas": .catalogDeltas(from: a, deltas: [delta]),
            ]
            return messages.mapValues { message in
                // As on the wire: a four-byte length, then the message; two frames in a row.
                let body = Array(GossipCodec.encode(message).readableBytesView)
                let frame = withUnsafeBytes(of: UInt32(body.count).bigEndian, Array.init) + body
                return frame + frame
            }
        case .adminJSON:
            return [
                "register": Array(#"{"host": "echo.default.svc.cluster.local", "port": 8080, "address": "127.0.1.12:8080", "locality": "us-east1/a", "labels": {"version": "v2", "app.kubernetes.io/name": "echo"}}"#.utf8),
                "deregister": Array(#"{"host": "echo.default.svc.cluster.local", "port": 8080, "address": "127.0.1.12:8080"}"#.utf8),
                "fault-region": Array(#"{"blackhole": {"region": "us-east1"}, "duration": "30s"}"#.utf8),
                "fault-zone": Array(#"{"blackhole": {"cluster": "east", "zone": "a"}, "duration": "1500ms"}"#.utf8),
            ]
        case .jwt:
            // Well-formed tokens the fuzzer can bend: signed by a key nobody trusts.
            let other = P256.Signing.PrivateKey()
            func b64(_ text: String) -> String { JWT.base64URLEncoded(Data(text.utf8)) }
            func token(_ header: String, _ claims: String) -> [UInt8] {
                let input = b64(header) + "." + b64(claims)
                let signature = (try? other.signature(for: SHA256.hash(data: Data(input.utf8))).rawRepresentation) ?? Data()
                return Array((input + "." + JWT.base64URLEncoded(signature)).utf8)
            }
            return [
                "es256": token(#"{"alg":"ES256","kid":"k1"}"#, #"{"iss":"https://issuer.example","sub":"alice","aud":["fuzz"],"exp":4102444800,"a":{"b":{"c":"deep"}}}"#),
                "unknown-issuer": token(#"{"alg":"RS256"}"#, #"{"iss":"https://other.example","sub":"bob"}"#),
                "alg-none": Array((b64(#"{"alg":"none"}"#) + "." + b64(#"{"iss":"https://issuer.example"}"#) + ".").utf8),
                "jwks": Array(#"{"keys":[{"kty":"RSA","n":"sXch","e":"AQAB","kid":"r"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#.utf8),
            ]
        case .extAuthzGRPC:
            // The Istio sample's two answers, as the protobuf runtime writes them.
            var ok = ProtobufWire.Writer()
            ok.message(1) { _ in }
            ok.message(3) { response in
                response.message(2) { option in option.message(1) { $0.string(1, "x-ext-authz-check-result"); $0.string(2, "allowed") } }
                response.string(5, "authorization")
                response.message(6) { option in option.message(1) { $0.string(1, "x-seen"); $0.string(2, "yes") }; option.integer(3, 2) }
            }
            var denied = ProtobufWire.Writer()
            denied.message(1) { $0.integer(1, 7) }
            denied.message(2) { response in
                response.message(1) { $0.integer(1, 403) }
                response.message(2) { option in option.message(1) { $0.string(1, "x-ext-authz-check-result"); $0.string(2, "denied") } }
                response.string(3, "denied by ext_authz")
            }
            var error = ProtobufWire.Writer()
            error.message(1) { $0.integer(1, 13) }
            error.message(5) { response in response.message(1) { $0.integer(1, 500) }; response.string(3, "provider broke") }
            var bare = ProtobufWire.Writer()
            bare.message(3) { _ in }
            return ["ok": ok.bytes, "denied": denied.bytes, "error-response": error.bytes, "ok-bare": bare.bytes]
        case .clientHello, .config:
            return [:]
        }
    }
}
