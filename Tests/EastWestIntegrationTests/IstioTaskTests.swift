import Foundation
import Testing

/// Istio's security and rate-limit task pages, their YAML pasted as users paste it
/// (Tests/Fixtures/istio-tasks), through `eastwest up`: a client in east calls Bookinfo's
/// services and httpbin in west, with the identities the tasks use, and gets the answers the
/// task pages print.
@Suite("Istio's task pages through eastwest up", .serialized, .timeLimit(.minutes(4)))
struct IstioTaskTests {
    static let fixtures = "\(PackagePaths.root)/Tests/Fixtures/istio-tasks"

    struct Client {
        var certificateChain: String, privateKey: String, rootCertificate: String
    }

    /// One request through east's gateway: the status, the body and the response headers.
    static func call(_ client: Client, _ host: String, port: Int, path: String, method: String = "GET", headers: [String] = [],
                     gateway: String = "127.0.125.1") async throws -> (code: String, body: String, headers: String) {
        let dir = try TemporaryDirectory("task-call")
        defer { dir.cleanUp() }
        var arguments = ["-sS", "--max-time", "10", "--cacert", client.rootCertificate, "--cert", client.certificateChain, "--key", client.privateKey,
                         "--resolve", "\(host):15443:\(gateway)", "-X", method, "-D", "\(dir.path)/headers", "-w", "\n%{http_code}"]
        arguments += headers.flatMap { ["-H", $0] }
        arguments.append("https://\(host):15443\(path)")
        let result = try await runCommand("/usr/bin/curl", arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let received = (try? String(contentsOfFile: "\(dir.path)/headers", encoding: .utf8)) ?? ""
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"), received.lowercased())
    }

    @Test("authz-http, authz-deny and the local rate-limit task: validate reports nothing skipped; through up every request gets the task page's status")
    func authorizationAndRateLimitTasks() async throws {
        let files = ["authz-http", "authz-deny", "local-rate-limit"].map { "\(Self.fixtures)/\($0).yaml" }
        let validate = try await runCommand(PackagePaths.eastwest, ["validate"] + files)
        #expect(validate.status == 0, "\(validate.stderr)")
        #expect(!validate.stderr.contains("skipped") && !validate.stderr.contains("warning"), "\(validate.stderr)")

        let dir = try TemporaryDirectory("istio-tasks")
        defer { dir.cleanUp() }
        let topology = "\(dir.path)/topology.yaml"
        func service(_ host: String, _ port: Int, _ app: String, _ address: String) -> String {
            """
                  - host: \(host)
                    port: \(port)
                    protocol: http
                    endpoints: [{address: "\(address):\(port)", locality: us-west1/us-west1-a, labels: {app: \(app)}}]
            """
        }
        try """
            name: istio-tasks
            policies: [\(files.joined(separator: ", "))]
            clusters:
            - name: east
              gateways: [{name: task-east-gw, address: 127.0.125.1, locality: us-east1/us-east1-a}]
            - name: west
              gateways: [{name: task-west-gw, address: 127.0.126.1, locality: us-west1/us-west1-a}]
              services:
            \(service("productpage.default.svc.cluster.local", 9080, "productpage", "127.0.126.10"))
            \(service("details.default.svc.cluster.local", 9080, "details", "127.0.126.11"))
            \(service("reviews.default.svc.cluster.local", 9080, "reviews", "127.0.126.12"))
            \(service("ratings.default.svc.cluster.local", 9080, "ratings", "127.0.126.13"))
            \(service("httpbin.foo.svc.cluster.local", 8000, "httpbin", "127.0.126.14"))
            """.write(toFile: topology, atomically: true, encoding: .utf8)
        let (up, state) = try await startUp(topology, in: dir)
        defer { up.stop() }

        // Bookinfo's service accounts, issued by the deployment's own CA for clients in east.
        func identity(_ account: String) async throws -> Client {
            let out = "\(dir.path)/\(account)"
            let issued = try await runCommand(PackagePaths.eastwest, ["ca", "workload", "--dir", "\(state)/certs", "--cluster", "east",
                                                                      "--spiffe", "spiffe://cluster.local/ns/default/sa/\(account)", "--out", out])
            try #require(issued.status == 0, "\(issued.stderr)")
            return Client(certificateChain: "\(out)/cert-chain.pem", privateKey: "\(out)/key.pem", rootCertificate: "\(out)/root-cert.pem")
        }
        let sleep = try await identity("sleep"), productpage = try await identity("bookinfo-productpage"), reviews = try await identity("bookinfo-reviews")
        let page = "productpage.default.svc.cluster.local", httpbin = "httpbin.foo.svc.cluster.local"
        // West's endpoints reach east by gossip: wait for the first answer that is not "no route".
        #expect(await eventually(timeout: .seconds(30)) { (try? await Self.call(sleep, httpbin, port: 8000, path: "/ip", headers: ["x-token: admin"]).code) == "200" },
                "\(up.log.suffix(3000))")

        // Rate-limit task: productpage's inbound limit, 4 tokens a minute, x-local-rate-limit on refusals.
        var codes: [String] = []
        for _ in 0..<5 { codes.append(try await Self.call(sleep, page, port: 9080, path: "/productpage").code) }
        #expect(codes == ["200", "200", "200", "200", "429"])
        let limited = try await Self.call(sleep, page, port: 9080, path: "/productpage")
        #expect(limited.code == "429" && limited.body == "local_rate_limited" && limited.headers.contains("x-local-rate-limit: true"), "\(limited)")

        // authz-http: allow-nothing, then GET to productpage for anyone; details and reviews
        // for productpage's account; ratings for reviews' account.
        let post = try await Self.call(sleep, page, port: 9080, path: "/productpage", method: "POST")
        #expect(post.code == "403" && post.body == "RBAC: access denied", "\(post)")
        let details = "details.default.svc.cluster.local", reviewsHost = "reviews.default.svc.cluster.local", ratings = "ratings.default.svc.cluster.local"
        #expect(try await Self.call(productpage, details, port: 9080, path: "/details/0").code == "200")
        #expect(try await Self.call(sleep, details, port: 9080, path: "/details/0").code == "403")
        #expect(try await Self.call(productpage, details, port: 9080, path: "/details/0", method: "POST").code == "403")
        #expect(try await Self.call(productpage, reviewsHost, port: 9080, path: "/reviews/0").code == "200")
        #expect(try await Self.call(reviews, reviewsHost, port: 9080, path: "/reviews/0").code == "403")
        #expect(try await Self.call(reviews, ratings, port: 9080, path: "/ratings/0").code == "200")
        #expect(try await Self.call(productpage, ratings, port: 9080, path: "/ratings/0").code == "403")

        // authz-deny as the task leaves it: GET denied unless x-token is admin; only /ip allowed.
        #expect(try await Self.call(sleep, httpbin, port: 8000, path: "/ip", headers: ["x-token: guest"]).code == "403")
        #expect(try await Self.call(sleep, httpbin, port: 8000, path: "/ip", headers: ["x-token: admin"]).code == "200")
        #expect(try await Self.call(sleep, httpbin, port: 8000, path: "/get", headers: ["x-token: admin"]).code == "403")
    }
}
