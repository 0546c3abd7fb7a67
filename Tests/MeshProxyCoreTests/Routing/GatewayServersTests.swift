import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import Testing
@testable import MeshProxyCore

/// Istio's Gateway resource: loading, which servers select a gateway, which hosts they expose and
/// how; and the ClientHello reading that tells an EastWest peer from an Istio workload.
@Suite("Gateway resources")
struct GatewayServersTests {
    /// Istio's samples/multicluster/expose-services.yaml, as users paste it (Tests/Fixtures/multicluster).
    static let exposeServices: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("Fixtures/multicluster/expose-services.yaml"), encoding: .utf8)) ?? ""
    }()

    @Test("expose-services.yaml loads as written and passes *.local through on 15443 of a gateway labelled istio: eastwestgateway")
    func exposeServicesLoads() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.exposeServices, file: "expose-services.yaml")
        #expect(loaded.warnings.isEmpty && loaded.skipped.isEmpty, "\(loaded.warnings) \(loaded.skipped)")
        let servers = try #require(GatewayServers.compile(loaded.gateways, origins: loaded.gatewayOrigins, labels: ["istio": "eastwestgateway"], port: 15443))
        #expect(servers.exposure(of: "reviews.default.svc.cluster.local") == .passthrough)
        #expect(servers.exposure(of: "example.com") == .hidden("no Gateway server on this port exposes example.com (Gateway istio-system/cross-network-gateway servers[0] (expose-services.yaml:6))"))
        #expect(GatewayServers.compile(loaded.gateways, origins: [], labels: ["istio": "ingressgateway"], port: 15443) == nil, "another gateway's selector")
        #expect(GatewayServers.compile(loaded.gateways, origins: [], labels: ["istio": "eastwestgateway"], port: 443) == nil, "another port")
        // Said, not silent: a gateway on 443 would not serve the 15443 server.
        #expect(GatewayServers.unserved(loaded.gateways, origins: loaded.gatewayOrigins, labels: ["istio": "eastwestgateway"], port: 443)
                == ["expose-services.yaml:6: warning: Gateway istio-system/cross-network-gateway servers[0] is on port 15443; this gateway listens on 443 only, so the server is not served"])
        #expect(GatewayServers.unserved(loaded.gateways, origins: loaded.gatewayOrigins, labels: ["istio": "eastwestgateway"], port: 15443).isEmpty)
        #expect(GatewayServers.unserved(loaded.gateways, origins: [], labels: ["istio": "ingressgateway"], port: 443).isEmpty, "not selected")
    }

    @Test("hosts: namespace/name with * and ., wildcards by suffix; the first server exposing a host decides its mode")
    func hosts() throws {
        func host(_ text: String) -> GatewayHost? { GatewayHost(parsing: text, gatewayNamespace: "istio-system") }
        #expect(host("*/reviews.default.svc.cluster.local")?.matches("reviews.default.svc.cluster.local") == true)
        #expect(host("default/*")?.matches("reviews.default.svc.cluster.local") == true)
        #expect(host("shop/*")?.matches("reviews.default.svc.cluster.local") == false)
        #expect(host("./*")?.matches("kiali.istio-system.svc.cluster.local") == true)
        #expect(host("*.default.svc.cluster.local")?.matches("ratings.default.svc.cluster.local") == true)
        #expect(host("*.default.svc.cluster.local")?.matches("ratings.shop.svc.cluster.local") == false)
        #expect(host("a*b") == nil && host("/x") == nil && host("a/b/c") == nil && host("") == nil)
        let gateway = IstioGateway(selector: ["istio": "eastwestgateway"], servers: [
            .init(port: .init(number: 15443), hosts: ["default/ratings.default.svc.cluster.local"], tls: .init(mode: "ISTIO_MUTUAL")),
            .init(port: .init(number: 15443), hosts: ["*.local"], tls: .init(mode: "AUTO_PASSTHROUGH")),
        ])
        let servers = try #require(GatewayServers.compile([gateway], origins: [], labels: ["istio": "eastwestgateway", "app": "x"], port: 15443))
        #expect(servers.exposure(of: "ratings.default.svc.cluster.local") == .terminate)
        #expect(servers.exposure(of: "reviews.default.svc.cluster.local") == .passthrough)
    }

    @Test("What Istio rejects is an error at its line; TLS modes not carried out warn; certificate fields warn by name")
    func validation() throws {
        let bad = """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: bad}
            spec:
              selector: {istio: eastwestgateway}
              servers:
              - port: {number: 70000, name: x, protocol: QUIC}
                hosts: ["a*b"]
                tls: {mode: STRICT}
            """
        do {
            _ = try IstioPolicyLoader.load(yaml: bad, file: "bad.yaml")
            Issue.record("loaded")
        } catch {
            let text = error.description
            #expect(text.contains("bad.yaml:7:") && text.contains("port must be 1-65535"), "\(text)")
            #expect(text.contains("'QUIC' is not a Gateway protocol"), "\(text)")
            #expect(text.contains("bad.yaml:8:") && text.contains("'a*b' is not a Gateway host"), "\(text)")
            #expect(text.contains("bad.yaml:9:") && text.contains("'STRICT' is not a TLS mode"), "\(text)")
        }
        let partial = """
            apiVersion: networking.istio.io/v1beta1
            kind: Gateway
            metadata: {name: ingress}
            spec:
              selector: {istio: eastwestgateway}
              servers:
              - port: {number: 443, name: https, protocol: HTTPS}
                hosts: ["*"]
                tls: {mode: SIMPLE, credentialName: shop-cert}
            """
        let loaded = try IstioPolicyLoader.load(yaml: partial, file: "p.yaml")
        #expect(loaded.warnings.map(\.field).sorted() == ["spec.servers[0].tls.credentialName", "spec.servers[0].tls.mode"], "\(loaded.warnings)")
    }

    @Test("The ALPN a real ClientHello offers (BoringSSL's, as a peer gateway sends it), read before any crypto")
    func clientHelloALPN() throws {
        for offered in [["h2", ClientHelloALPN.peerMarker], ["istio-peer-exchange", "istio"], []] {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.applicationProtocols = offered
            configuration.certificateVerification = .none
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(
                try NIOSSLClientHandler(context: NIOSSLContext(configuration: configuration), serverHostname: "outbound_.9080_._.reviews.default.svc.cluster.local"))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 15443)).wait()
            let hello = try #require(try channel.readOutbound(as: ByteBuffer.self))
            #expect(ClientHelloALPN.offered(in: hello) == offered)
            #expect(ClientHelloALPN.offered(in: hello.getSlice(at: 0, length: hello.readableBytes - 1)!) == nil, "a cut record is not read")
            _ = try? channel.finish()
        }
        #expect(ClientHelloALPN.offered(in: ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")) == nil)
    }
}
