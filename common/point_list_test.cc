#include "common/point_list.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace i2s {
namespace {

TEST(PointListTest, ReadsPairsInAnyLayout) {
  auto p = ParsePointList("# eyes\n203.5 101\n246.5,103.1; 225 120  # nose\n\t1e2 -4\n", "f");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 4u);
  EXPECT_DOUBLE_EQ((*p)[1].second, 103.1);
  EXPECT_DOUBLE_EQ((*p)[3].first, 100);
  EXPECT_DOUBLE_EQ((*p)[3].second, -4);
  EXPECT_TRUE(ParsePointList("", "f")->empty());
}

TEST(PointListTest, NamesTheFieldAndTheProblem) {
  auto odd = ParsePointList("1 2 3", "lm.txt");
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(odd.status().message(), "lm.txt: 3 numbers; points are pairs of x and y");
  auto word = ParsePointList("1 2\n3 eye", "lm.txt");
  EXPECT_EQ(word.status().message(), "lm.txt: 'eye' is not a number");
  EXPECT_FALSE(ParsePointList("nan 1", "f").ok());
  EXPECT_FALSE(ParsePointList("inf 1", "f").ok());
}

}  // namespace
}  // namespace i2s
