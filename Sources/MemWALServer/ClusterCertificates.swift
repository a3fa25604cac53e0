import Crypto
import Foundation
import Glibc
import SwiftASN1
import X509

/// A cluster's certificate authority and the certificates it issues to nodes and to the controller
/// (`memwal certs init`). Everything is made here with swift-certificates and swift-crypto; nothing
/// shells out to openssl.
///
/// The files in a certificates directory, all PEM:
///
/// | file | holds |
/// |---|---|
/// | `ca.pem` | the cluster CA's self-signed certificate: the only trust root of peer links |
/// | `ca-key.pem` | the CA's private key (PKCS #8, mode 0600); needed only to issue more certificates |
/// | `NAME.pem` | the certificate of node (or `controller`) NAME, issued by the CA |
/// | `NAME-key.pem` | its private key (PKCS #8, mode 0600) |
///
/// Keys are P-256 ECDSA. A member's certificate names it in a DNS subject alternative name (the name
/// peer links check against the membership), plus `localhost` and `127.0.0.1` so that the same files
/// also serve the client API on loopback; its extended key usage is both server and client
/// authentication, since every member is both ends of some link.
public enum ClusterCertificates {
  /// The name `--controller` adds to the members.
  public static let controllerName = "controller"
  /// How long the CA is valid, in days.
  public static let authorityValidityDays = 3_650
  /// How long a member's certificate is valid unless told otherwise, in days.
  public static let defaultValidityDays = 825
  /// How far before "now" a certificate starts to be valid, so a peer whose clock is a little behind
  /// still accepts it.
  static let backdateSeconds: TimeInterval = 3_600

  /// What ``initialize(directory:names:validityDays:replacingExisting:now:)`` did, file by file.
  public struct Report: Sendable, Equatable {
    /// Files written, in the order they were written (names relative to the directory).
    public var written: [String] = []
    /// Files that existed and were left as they were.
    public var kept: [String] = []
    /// True when the directory already held a CA that issued the new certificates.
    public var reusedAuthority = false
  }

  /// Makes (or completes) a certificates directory: a CA unless one is there, and a key and
  /// certificate for each name that has none. An existing file is never overwritten unless
  /// `replacingExisting`, which starts over: a new CA and new certificates for every name given
  /// (certificates the old CA issued to other names stop being trusted).
  public static func initialize(
    directory: String, names: [String], validityDays: Int = defaultValidityDays,
    replacingExisting: Bool = false, now: Date = Date()
  ) throws(ClusterCertificateError) -> Report {
    try checkNames(names)
    guard (1...authorityValidityDays).contains(validityDays) else {
      throw .invalidValidity(days: validityDays, maximum: authorityValidityDays)
    }
    let files = CertificateFiles(directory: directory)
    try files.prepareDirectory()
    var report = Report()
    let authority: ClusterAuthority
    if !replacingExisting, let existing = try files.loadAuthority() {
      authority = existing
      report.reusedAuthority = true
      report.kept += [CertificateFiles.authorityCertificate, CertificateFiles.authorityKey]
    } else {
      authority = try ClusterAuthority.make(now: now)
      try files.write(authority.privateKeyPEM, to: CertificateFiles.authorityKey, secret: true)
      try files.write(authority.certificatePEM, to: CertificateFiles.authorityCertificate, secret: false)
      report.written += [CertificateFiles.authorityKey, CertificateFiles.authorityCertificate]
    }
    for name in names {
      let certificateFile = CertificateFiles.certificate(of: name)
      let keyFile = CertificateFiles.key(of: name)
      if !replacingExisting {
        switch (files.exists(certificateFile), files.exists(keyFile)) {
        case (true, true):
          report.kept += [certificateFile, keyFile]
          continue
        case (true, false), (false, true):
          throw .incompleteMember(
            name: name, directory: directory,
            present: files.exists(certificateFile) ? certificateFile : keyFile,
            missing: files.exists(certificateFile) ? keyFile : certificateFile)
        case (false, false): break
        }
      }
      let issued = try authority.issue(to: name, validityDays: validityDays, now: now)
      try files.write(issued.privateKeyPEM, to: keyFile, secret: true)
      try files.write(issued.certificatePEM, to: certificateFile, secret: false)
      report.written += [keyFile, certificateFile]
    }
    return report
  }

  /// Checks that `name` can name a member: a DNS label of lowercase letters, digits and hyphens
  /// (at most 63, starting with a letter, not ending with a hyphen), and not `localhost`, which
  /// every member's certificate carries.
  public static func checkNodeName(_ name: String) throws(ClusterCertificateError) {
    guard !name.isEmpty, name.utf8.count <= 63 else {
      throw .invalidNodeName(name, reason: "must have 1 to 63 characters")
    }
    guard name.utf8.allSatisfy({ (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2d })
    else {
      throw .invalidNodeName(name, reason: "may hold only lowercase letters a-z, digits and '-'")
    }
    guard let first = name.utf8.first, (0x61...0x7a).contains(first), name.utf8.last != 0x2d else {
      throw .invalidNodeName(name, reason: "must start with a letter and not end with '-'")
    }
    guard name != "localhost" else {
      throw .invalidNodeName(name, reason: "is reserved (every member's certificate names localhost)")
    }
  }

  static func checkNames(_ names: [String]) throws(ClusterCertificateError) {
    guard !names.isEmpty else { throw .noNames }
    var seen = Set<String>()
    for name in names {
      try checkNodeName(name)
      guard seen.insert(name).inserted else { throw .duplicateNodeName(name) }
    }
  }
}

/// Why certificates could not be made.
public enum ClusterCertificateError: Error, Equatable, Sendable, CustomStringConvertible {
  case noNames
  case invalidNodeName(String, reason: String)
  case duplicateNodeName(String)
  case invalidValidity(days: Int, maximum: Int)
  case directoryNotUsable(path: String, reason: String)
  case unreadableFile(path: String, reason: String)
  case invalidAuthority(path: String, reason: String)
  case incompleteMember(name: String, directory: String, present: String, missing: String)
  case writeFailed(path: String, reason: String)
  case generationFailed(name: String, reason: String)

  public var description: String {
    switch self {
    case .noNames:
      return "certs: give at least one node name"
    case .invalidNodeName(let name, let reason):
      return "certs: node name \"\(name)\" \(reason)"
    case .duplicateNodeName(let name):
      return "certs: node name \"\(name)\" is given twice"
    case .invalidValidity(let days, let maximum):
      return "certs: --days \(days) must be within 1...\(maximum) (the CA's own validity)"
    case .directoryNotUsable(let path, let reason):
      return "certs: cannot use directory \(path): \(reason)"
    case .unreadableFile(let path, let reason):
      return "certs: cannot read \(path): \(reason)"
    case .invalidAuthority(let path, let reason):
      return
        "certs: the CA in \(path) cannot be used: \(reason) (--force makes a new CA and new certificates)"
    case .incompleteMember(let name, let directory, let present, let missing):
      return
        "certs: \(directory) has \(present) but not \(missing) for \(name); remove \(present) to issue anew, or give --force"
    case .writeFailed(let path, let reason):
      return "certs: cannot write \(path): \(reason)"
    case .generationFailed(let name, let reason):
      return "certs: cannot make the certificate of \(name): \(reason)"
    }
  }
}

/// A CA's certificate and key, able to issue member certificates.
struct ClusterAuthority {
  var certificate: Certificate
  var privateKey: Certificate.PrivateKey
  var certificatePEM: String
  var privateKeyPEM: String

  static func make(now: Date) throws(ClusterCertificateError) -> ClusterAuthority {
    let key = P256.Signing.PrivateKey()
    let privateKey = Certificate.PrivateKey(key)
    do {
      var random = SystemRandomNumberGenerator()
      let tag = String(random.next() & 0xFFFF_FFFF, radix: 16)
      let name = try DistinguishedName {
        OrganizationName("MemWAL cluster")
        CommonName("MemWAL cluster CA \(tag)")
      }
      let extensions = try Certificate.Extensions {
        Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
        Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
        SubjectKeyIdentifier(hash: privateKey.publicKey)
      }
      let certificate = try Certificate(
        version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: privateKey.publicKey,
        notValidBefore: now - ClusterCertificates.backdateSeconds,
        notValidAfter: now + Double(ClusterCertificates.authorityValidityDays) * 86_400,
        issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
        issuerPrivateKey: privateKey)
      return ClusterAuthority(
        certificate: certificate, privateKey: privateKey,
        certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
    } catch {
      throw .generationFailed(name: "the CA", reason: "\(error)")
    }
  }

  /// Reads a CA from its two PEM files and checks that they belong together.
  static func load(certificatePEM: String, keyPEM: String, directory: String) throws(ClusterCertificateError)
    -> ClusterAuthority
  {
    let certificatePath = directory + "/" + CertificateFiles.authorityCertificate
    let keyPath = directory + "/" + CertificateFiles.authorityKey
    let certificate: Certificate
    let privateKey: Certificate.PrivateKey
    do {
      certificate = try Certificate(pemEncoded: certificatePEM)
    } catch {
      throw .invalidAuthority(path: certificatePath, reason: "not a PEM certificate (\(error))")
    }
    do {
      privateKey = try Certificate.PrivateKey(pemEncoded: keyPEM)
    } catch {
      throw .invalidAuthority(path: keyPath, reason: "not a PEM private key (\(error))")
    }
    guard privateKey.publicKey == certificate.publicKey else {
      throw .invalidAuthority(path: keyPath, reason: "the key does not match \(certificatePath)")
    }
    guard case .isCertificateAuthority = try? certificate.extensions.basicConstraints else {
      throw .invalidAuthority(path: certificatePath, reason: "the certificate is not a CA (basicConstraints)")
    }
    return ClusterAuthority(
      certificate: certificate, privateKey: privateKey, certificatePEM: certificatePEM, privateKeyPEM: keyPEM)
  }

  /// A new key and a certificate for member `name`, valid for `validityDays` but never past the CA.
  func issue(to name: String, validityDays: Int, now: Date) throws(ClusterCertificateError)
    -> (certificatePEM: String, privateKeyPEM: String)
  {
    let key = P256.Signing.PrivateKey()
    let publicKey = Certificate.PrivateKey(key).publicKey
    do {
      let subject = try DistinguishedName {
        OrganizationName("MemWAL cluster")
        CommonName(name)
      }
      let authorityKeyIdentifier = try certificate.extensions.subjectKeyIdentifier?.keyIdentifier
      let extensions = try Certificate.Extensions {
        Critical(BasicConstraints.notCertificateAuthority)
        Critical(KeyUsage(digitalSignature: true))
        try ExtendedKeyUsage([.serverAuth, .clientAuth])
        SubjectAlternativeNames([
          .dnsName(name), .dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
        ])
        SubjectKeyIdentifier(hash: publicKey)
        if let authorityKeyIdentifier {
          AuthorityKeyIdentifier(keyIdentifier: authorityKeyIdentifier)
        }
      }
      let notValidAfter = min(now + Double(validityDays) * 86_400, certificate.notValidAfter)
      let issued = try Certificate(
        version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
        notValidBefore: now - ClusterCertificates.backdateSeconds, notValidAfter: notValidAfter,
        issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
        extensions: extensions, issuerPrivateKey: privateKey)
      return (try issued.serializeAsPEM().pemString, key.pemRepresentation)
    } catch {
      throw .generationFailed(name: name, reason: "\(error)")
    }
  }
}

/// The files of a certificates directory, written so that a crash leaves either the old file or
/// the whole new one (temporary file, fsync, rename, fsync of the directory), keys never readable
/// by others even for a moment.
struct CertificateFiles {
  static let authorityCertificate = "ca.pem"
  static let authorityKey = "ca-key.pem"
  static func certificate(of name: String) -> String { name + ".pem" }
  static func key(of name: String) -> String { name + "-key.pem" }

  var directory: String

  func path(_ file: String) -> String { directory + "/" + file }

  func exists(_ file: String) -> Bool { FileManager.default.fileExists(atPath: path(file)) }

  /// Creates the directory and its missing parents (mode 0700: it holds keys) and checks that it
  /// can be written.
  func prepareDirectory() throws(ClusterCertificateError) {
    var prefix = directory.hasPrefix("/") ? "" : "."
    for component in directory.split(separator: "/") {
      prefix += "/" + component
      if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
        throw .directoryNotUsable(
          path: directory, reason: "cannot create \(prefix): \(String(cString: strerror(errno)))")
      }
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
    else {
      throw .directoryNotUsable(path: directory, reason: "it is not a directory")
    }
    guard access(directory, W_OK | X_OK) == 0 else {
      throw .directoryNotUsable(path: directory, reason: String(cString: strerror(errno)))
    }
  }

  /// The CA in the directory, nil when it has none.
  func loadAuthority() throws(ClusterCertificateError) -> ClusterAuthority? {
    let hasCertificate = exists(Self.authorityCertificate)
    let hasKey = exists(Self.authorityKey)
    switch (hasCertificate, hasKey) {
    case (false, false): return nil
    case (true, false):
      throw .invalidAuthority(
        path: path(Self.authorityCertificate), reason: "\(Self.authorityKey) is missing, so it cannot issue")
    case (false, true):
      throw .invalidAuthority(
        path: path(Self.authorityKey), reason: "\(Self.authorityCertificate) is missing")
    case (true, true):
      return try ClusterAuthority.load(
        certificatePEM: try read(Self.authorityCertificate), keyPEM: try read(Self.authorityKey),
        directory: directory)
    }
  }

  func read(_ file: String) throws(ClusterCertificateError) -> String {
    do {
      return try String(contentsOfFile: path(file), encoding: .utf8)
    } catch {
      throw .unreadableFile(path: path(file), reason: error.localizedDescription)
    }
  }

  /// Writes `text` to `file` through a temporary file; `secret` files are made with mode 0600.
  func write(_ text: String, to file: String, secret: Bool) throws(ClusterCertificateError) {
    let target = path(file)
    let temporary = target + ".tmp"
    let failure = { (what: String) -> ClusterCertificateError in
      .writeFailed(path: target, reason: "\(what): \(String(cString: strerror(errno)))")
    }
    unlink(temporary)
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, secret ? 0o600 : 0o644)
    guard descriptor >= 0 else { throw failure("open") }
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let count = bytes.withUnsafeBytes {
        Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset)
      }
      if count < 0 && errno == EINTR { continue }
      guard count > 0 else {
        let error = failure("write")
        close(descriptor)
        unlink(temporary)
        throw error
      }
      offset += count
    }
    guard fsync(descriptor) == 0 else {
      let error = failure("fsync")
      close(descriptor)
      unlink(temporary)
      throw error
    }
    close(descriptor)
    guard rename(temporary, target) == 0 else {
      let error = failure("rename")
      unlink(temporary)
      throw error
    }
    let directoryDescriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if directoryDescriptor >= 0 {
      _ = fsync(directoryDescriptor)
      close(directoryDescriptor)
    }
  }
}
