// @mentions in the composer without a browser (node --test): the name being typed, the members it
// may mean, completing it, and the ids a finished text names. Runs on the built app.
import assert from "node:assert/strict";
import { test } from "node:test";
import { completeMention, mentionCandidates, mentionedIds, mentionQuery } from "../../../imray/webapp/mentions.js";

const members = [
  { id: 1, username: "ann", nickname: "Ann" },
  { id: 2, username: "annie_b", nickname: "Bee" },
  { id: 3, username: "bob.s", nickname: "Robert" },
];

test("the query is the partial name after an @ that starts a word, up to the caret", () => {
  assert.equal(mentionQuery("hi @an"), "an");
  assert.equal(mentionQuery("@"), "");
  assert.equal(mentionQuery("mail me at me@an"), null);  // not a mention: inside a word
  assert.equal(mentionQuery("hi @ann there"), null);  // the caret is past it
});

test("candidates match the username or the nickname, case ignored", () => {
  assert.deepEqual(mentionCandidates("AN", members).map((m) => m.id), [1, 2]);
  assert.deepEqual(mentionCandidates("rob", members).map((m) => m.id), [3]);
});

test("completing replaces the partial name with the username and a space, keeping what follows", () => {
  assert.deepEqual(completeMention("hi @an", 6, "annie_b"), { text: "hi @annie_b ", caret: 12 });
  assert.deepEqual(completeMention("hi @an see you", 6, "ann"), { text: "hi @ann see you", caret: 8 });
});

test("mentioned ids are the members named as whole words, a sentence's full stop allowed", () => {
  assert.deepEqual(mentionedIds("@ann and @bob.s.", members), [1, 3]);
  assert.deepEqual(mentionedIds("@annie_b", members), [2]);
  assert.deepEqual(mentionedIds("mail ann@annie_b or @nobody", members), []);
});
