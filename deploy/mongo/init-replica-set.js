// Run once by compose's mongo-init: make mongo-1..3 the replica set rs0 (idempotent).
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  rs.initiate({
    _id: "rs0",
    members: [
      { _id: 0, host: "mongo-1:27017" },
      { _id: 1, host: "mongo-2:27017" },
      { _id: 2, host: "mongo-3:27017" },
    ],
  });
  print("replica set rs0 initiated");
}
